"""A wheel install runs the README's main command: the bundled weights and presets ship as package data.

The wheel is built from a copy of the sources (no build/ left in the checkout, nothing stale from one), installed
with --no-deps into a fresh venv that borrows this environment's dependencies (torch is not installed twice), and
run from a directory outside the repository, so nothing can resolve relative to the checkout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import av
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "synthetic-drive.mp4"
PRESETS = sorted(p.name for p in (ROOT / "pipelines").glob("*.toml"))
WEIGHTS = "segformer3d-rt-b0-roads.safetensors"
# what the build reads: the package, the two mapped data folders, the metadata
SOURCES = ["pyproject.toml", "README.md", "segformer3d_rt", "weights", "pipelines"]


def test_pyproject_lists_every_package_and_maps_the_bundled_folders():
    """[tool.setuptools] packages is an explicit list (the mapped data packages need one): a new subpackage
    under segformer3d_rt/ must be added there or wheel installs lack it."""
    from setuptools import find_namespace_packages

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"segformer3d_rt.bundled_weights": "weights", "segformer3d_rt.presets": "pipelines"}
    code = [p for p in find_namespace_packages(str(ROOT), include=["segformer3d_rt*"])
            if p.split(".")[-1] != "__pycache__"]
    assert sorted(tool["packages"]) == sorted(code + list(tool["package-dir"]))


def _copy_sources(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.partial")
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        else:
            shutil.copy2(src, dst / name)


def _site_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(d) for d in dict.fromkeys([paths["purelib"], paths["platlib"]]) if Path(d).is_dir()]


def _borrowed_deps(dst: Path) -> Path:
    """A folder of links to this environment's installed packages, less this project (its editable finder and
    metadata) and the .pth files: the fresh venv imports torch & co from here, and segformer3d_rt only from
    its own site-packages."""
    dst.mkdir()
    for site in _site_dirs():
        for entry in site.iterdir():
            name = entry.name
            if (name.startswith(("segformer3d_rt", "__editable__")) or name.endswith(".pth")
                    or name == "__pycache__" or (dst / name).exists()):
                continue
            (dst / name).symlink_to(entry)
    return dst


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
                                                              "SEGFORMER3D_RT_WEIGHTS")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = tmp / "src", tmp / "dist"
    src.mkdir()
    _copy_sources(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(out), str(src)], cwd=tmp)
    (whl,) = out.glob("segformer3d_rt-*.whl")
    return whl


@pytest.fixture(scope="module")
def deps(tmp_path_factory) -> Path:
    return _borrowed_deps(tmp_path_factory.mktemp("deps") / "site")


def _fresh_venv(venv: Path, deps: Path, wheel: Path) -> Path:
    """A venv without pip that sees `deps`, with `wheel` installed by this environment's pip (--python)."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    py = venv / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv.parent)
    (Path(site.strip()) / "zz_borrowed_deps.pth").write_text(f"{deps}\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         cwd=venv.parent)
    return venv


@pytest.fixture(scope="module")
def venv(wheel, deps, tmp_path_factory) -> Path:
    return _fresh_venv(tmp_path_factory.mktemp("venv") / "venv", deps, wheel)


_WHERE = ("import json, segformer3d_rt; from segformer3d_rt.runtime import bundled; "
          "print(json.dumps([segformer3d_rt.__file__, str(bundled.default_weights()), bundled.preset_names()]))")


def test_wheel_contains_the_bundled_weights_and_presets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert f"segformer3d_rt/bundled_weights/{WEIGHTS}" in names
    assert "segformer3d_rt/bundled_weights/MODEL_CARD.md" in names
    assert "segformer3d_rt/bundled_weights/recipe.sh" not in names  # a repository script, not package data
    assert PRESETS and {f"segformer3d_rt/presets/{p}" for p in PRESETS} <= names
    code = {p.relative_to(ROOT).as_posix() for p in (ROOT / "segformer3d_rt").rglob("*.py")
            if "__pycache__" not in p.parts}
    assert code <= names, f"modules missing from the wheel: {sorted(code - names)}"
    assert wheel.stat().st_size < 12 * 2**20


def test_wheel_install_runs_the_main_command_outside_the_checkout(venv, tmp_path):
    env = _env(venv)
    py, exe = venv / "bin" / "python", venv / "bin" / "segformer3d-rt"
    where = json.loads(_run([str(py), "-c", _WHERE], cwd=tmp_path, env=env))
    package, weights, presets = (Path(where[0]).resolve(), Path(where[1]).resolve(), where[2])
    assert package.is_relative_to(venv.resolve()) and not package.is_relative_to(ROOT), package
    assert weights.is_relative_to(package.parent) and weights.name == WEIGHTS
    assert presets == [Path(p).stem for p in PRESETS]

    _run([str(exe), "run", str(SAMPLE), "-o", "out.mp4", "--stats-json", "stats.json", "--max-frames", "10"],
         cwd=tmp_path, env=env)
    report = json.loads((tmp_path / "stats.json").read_text())
    assert report["frames"]["out"] == 10
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 10

    _run([str(exe), "run", str(SAMPLE), "--pipeline", "benchmark", "--max-frames", "5", "-o", "out2.mp4"],
         cwd=tmp_path, env=env)
    with av.open(str(tmp_path / "out2.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5

    r = subprocess.run([str(exe), "run", str(SAMPLE), "--pipeline", "no-such-preset", "-o", "out3.mp4"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "no-such-preset" in r.stderr and ", ".join(Path(p).stem for p in PRESETS) in r.stderr


def test_editable_install_finds_the_repository_folders(deps, tmp_path):
    """What the README's `pip install -e .` gives: setuptools' editable finder maps the two data packages onto
    weights/ and pipelines/ of the checkout (regular packages: it cannot map nested namespace packages)."""
    src, out = tmp_path / "src", tmp_path / "dist"
    src.mkdir()
    _copy_sources(src)
    _run([sys.executable, "-c", f"from setuptools import build_meta as b; b.build_editable({str(out)!r})"], cwd=src)
    (whl,) = out.glob("segformer3d_rt-*.editable-*.whl")
    venv = _fresh_venv(tmp_path / "venv", deps, whl)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    package, weights, presets = json.loads(_run([str(venv / "bin" / "python"), "-c", _WHERE], cwd=run_dir,
                                                env=_env(venv)))
    assert Path(package) == src / "segformer3d_rt" / "__init__.py"
    assert Path(weights) == src / "weights" / WEIGHTS
    assert presets == [Path(p).stem for p in PRESETS]


def test_this_environment_finds_the_checkout_folders(tmp_path):
    """The environment running the tests (the README's editable install): the bundled files are the checkout's."""
    import segformer3d_rt

    if not Path(segformer3d_rt.__file__).resolve().is_relative_to(ROOT):
        pytest.skip("segformer3d_rt is not installed from this checkout")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SEGFORMER3D_RT_WEIGHTS")}
    _, weights, presets = json.loads(_run([sys.executable, "-c", _WHERE], cwd=tmp_path, env=env))
    assert Path(weights).resolve() == ROOT / "weights" / WEIGHTS
    assert presets == [Path(p).stem for p in PRESETS]
