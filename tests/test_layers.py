"""The package's import layers, read from the source with ``ast`` (nothing is imported for the layer checks).

model -> runtime -> pipeline -> training / evaluation / benchmark / serve -> commands -> cli: a module imports only
from its own layer or the ones below it. Leaves (errors, labels, _malloc, synthetic) import only leaves and
are usable everywhere; data (dataset readers, registry, augment) is usable everywhere and itself imports only
leaves, model and runtime. The layer-4 packages do not import one another (what two of them share
belongs below both), nor does one command module import another (shared command helpers are private
``commands/_*.py`` modules). cli.py imports only commands, errors, _malloc and the package root, and each
command's public entry (``commands.X.run_*``) takes one dataclass config.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import typing
from pathlib import Path

import pytest

PKG = "segformer3d_rt"
ROOT = Path(__file__).resolve().parents[1] / PKG

LAYERS = {"model": 1, "runtime": 2, "pipeline": 3, "training": 4, "evaluation": 4, "benchmark": 4,
          "serve": 4, "fleet": 4, "commands": 5, "cli": 6, "__main__": 7}
LEAVES = {"errors", "labels", "_malloc", "synthetic"}
DATA = "data"
DATA_MAY_IMPORT = LEAVES | {DATA, "model", "runtime", ""}
ROOT_MAY_IMPORT = {"", "model"}  # the lazy public API (build_model, load_model, ...)
CLI_MAY_IMPORT = {"", "commands", "errors", "_malloc"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return (ROOT.parent / name.replace(".", "/") / "__init__.py").is_file()


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import of the package's own modules, function-level ones too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == PKG]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PKG:
                continue
            for a in node.names:  # `from pkg import submodule` imports that submodule
                sub = f"{target}.{a.name}"
                found.append((node.lineno, sub if sub in MODULES else target))
    return sorted(set(found))


def _unit(module: str) -> str:
    """The top-level subpackage or module a module belongs to ('' for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(src: str, dst: str) -> str | None:
    """Why ``src`` may not import ``dst`` (both units), or None when it may."""
    if dst == src:
        return None
    if src in LEAVES:
        return None if dst in LEAVES else "a leaf imports only leaves"
    if src == DATA:
        return None if dst in DATA_MAY_IMPORT else "data imports only leaves, model and runtime"
    if src == "":
        return None if dst in ROOT_MAY_IMPORT else "the package root exposes the model API only"
    if src == "cli":
        return None if dst in CLI_MAY_IMPORT else "cli.py only parses arguments and calls commands/"
    if dst in LEAVES or dst == DATA or dst == "":
        return None
    for unit in (src, dst):
        if unit not in LAYERS:
            return f"'{unit}' has no layer"
    if LAYERS[dst] > LAYERS[src]:
        return f"layer {LAYERS[src]} ({src}) imports layer {LAYERS[dst]} ({dst}) above it"
    if LAYERS[dst] == LAYERS[src]:
        return f"{src} reaches into its sibling {dst}"
    return None


def test_every_top_level_module_has_a_layer():
    units = {_unit(m) for m in MODULES} - {""}
    unknown = sorted(units - set(LAYERS) - LEAVES - {DATA})
    assert not unknown, f"modules outside the layers: {unknown} (give them a layer, or move them into one)"


def test_no_module_imports_from_a_layer_above_its_own():
    problems = []
    for name, path in MODULES.items():
        src = _unit(name)
        for line, target in _imports(name, path):
            why = _allowed(src, _unit(target))
            if why:
                problems.append(f"{path.relative_to(ROOT.parent)}:{line}: imports {target}: {why}")
    assert not problems, "\n".join(problems)


def test_command_modules_do_not_import_each_other():
    problems = []
    for name, path in MODULES.items():
        if not name.startswith(f"{PKG}.commands."):
            continue
        for line, target in _imports(name, path):
            if target.startswith(f"{PKG}.commands.") and target != name \
                    and not target.rpartition(".")[2].startswith("_"):
                problems.append(f"{path.relative_to(ROOT.parent)}:{line}: imports the command module {target}")
    assert not problems, "\n".join(problems)


def test_cli_imports_only_commands_errors_malloc_and_the_root():
    targets = {t for _, t in _imports(f"{PKG}.cli", MODULES[f"{PKG}.cli"])}
    assert targets, "cli.py imports nothing of the package?"
    assert {_unit(t) for t in targets} <= CLI_MAY_IMPORT, sorted(targets)
    assert any(_unit(t) == "commands" for t in targets)


def _command_modules() -> list[str]:
    return sorted(m for m in MODULES if m.startswith(f"{PKG}.commands.") and not m.rpartition(".")[2].startswith("_"))


def test_there_are_command_modules():
    assert {m.rpartition(".")[2] for m in _command_modules()} >= {"run", "train", "eval", "bench", "weights", "synth"}


@pytest.mark.parametrize("module", _command_modules())
def test_each_command_entry_takes_one_dataclass_config(module):
    mod = importlib.import_module(module)
    entries = [f for n, f in vars(mod).items()
               if n.startswith("run_") and inspect.isfunction(f) and f.__module__ == module]
    assert entries, f"{module} has no public entry run_*(cfg)"
    for fn in entries:
        params = list(inspect.signature(fn).parameters.values())
        assert len(params) == 1, f"{module}.{fn.__name__} takes {len(params)} parameters, not one config"
        hint = typing.get_type_hints(fn).get(params[0].name)
        assert hint is not None and dataclasses.is_dataclass(hint), \
            f"{module}.{fn.__name__}({params[0].name}) is not annotated with a dataclass config"


def test_cli_calls_every_command_entry():
    """cli.py reaches each command through its run_* entry (and only parsing happens in cli.py)."""
    tree = ast.parse(MODULES[f"{PKG}.cli"].read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(
        "commands") for a in n.names}
    for module in _command_modules():
        mod = importlib.import_module(module)
        for n in vars(mod):
            if n.startswith("run_") and inspect.isfunction(getattr(mod, n)) and getattr(mod, n).__module__ == module:
                assert n in imported, f"cli.py never calls {module}.{n}"


# a needle (a list of choices, a constant, a rule) -> the one module that may hold it
ONE_HOME = {
    "torch.bfloat16": "runtime/device.py",  # the precision name <-> dtype table
    "os.W_OK": "runtime/paths.py",  # the writability probe
    '"rich" if': "runtime/progress.py",  # the auto -> rich or plain rule
    '"plain", "none"': "runtime/progress.py",  # the progress modes
    '".mov", ".mkv"': "runtime/media_kinds.py",  # the video suffixes
    'BACKENDS = ("auto"': "runtime/backends/__init__.py",
    '"onnxruntime": ("fp32",)': "runtime/backends/__init__.py",  # what each backend computes in
    "% 32": "runtime/sizes.py",  # the network's stride
    "// 32": "runtime/sizes.py",
    "upsample_argmax(out": "pipeline/forward.py",  # the forward recipe's decoding
    "Normalizer(self.meta": "pipeline/forward.py",  # and its normalisation
    '"fp32", "fp16", "bf16"': "runtime/device.py",  # precision names are derived from PRECISIONS elsewhere
    "def _same_file": "runtime/paths.py",
}


def test_facts_with_one_home():
    """Each list of choices, constant and rule lives in one module; the others import it."""
    for name, path in MODULES.items():
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        for needle, home in ONE_HOME.items():
            assert needle not in text or rel == home, f"{rel} holds {needle!r}; its home is {home}"
    for name in ("pipeline.infer", "evaluation.evaluate"):  # the one forward recipe
        assert "from .forward import Forward" in MODULES[f"{PKG}.{name}"].read_text() or \
            "from ..pipeline.forward import Forward" in MODULES[f"{PKG}.{name}"].read_text(), name
    for name in ("benchmark.model_only", "data.augment", "pipeline.forward"):  # normalisation in one place
        text = MODULES[f"{PKG}.{name}"].read_text()
        assert "runtime.normalize" in text or "backends.fidelity import" in text, name
