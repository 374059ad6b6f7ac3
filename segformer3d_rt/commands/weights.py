"""`info` and `convert`: look inside any checkpoint, write it in the project's format."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ..errors import UserError
from ..model import SegFormer3D, build_model
from ..model.checkpoints import Checkpoint, model_from_checkpoint, read_checkpoint, save_checkpoint
from ..runtime.paths import check_new, check_outputs, no_stdout, writable_file
from ..runtime.settings import check_config, setting


@dataclass
class InfoConfig:
    """What `info` describes: a checkpoint file or directory, or (``weights`` None) a freshly built model."""

    weights: str | None = setting(None, positional=True, help="checkpoint file or Hugging Face directory")
    variant: str | None = setting(None, help="describe a freshly built model of this size instead (b0..b5)")
    num_classes: int = setting(19, low=1, high=1000, help="classes of the freshly built model")
    decoder_dim: int | None = setting(None, low=1, high=4096, help="decoder width of the freshly built model")
    depth: bool = setting(True, help="the freshly built model has a depth head (--no-depth: it has none)")
    json: bool = setting(False, help="print JSON instead of a table")


@dataclass
class ConvertConfig:
    """`convert`: any supported checkpoint -> the project's .safetensors."""

    input: str = setting(positional=True, help="checkpoint file or Hugging Face directory")
    output: str = setting(short="-o", required=True, help="output .safetensors path")
    half: bool = setting(False, help="store float16 tensors (half the size)")
    overwrite: bool = setting(False, help="replace outputs that already exist (an input is never written)")
    description: str | None = setting(None, help="a note stored in the metadata (what the weights were trained on)")


def _typed(cfg: InfoConfig | ConvertConfig) -> None:
    """The same typed checks as `run`'s settings (for configs built in Python as much as from flags)."""
    check_config(cfg)


def run_info(cfg: InfoConfig) -> int:
    _typed(cfg)
    if cfg.weights is None and cfg.variant is None:
        raise UserError("give a weights file, or --variant b0..b5 to describe a freshly built model")
    if cfg.weights is not None:
        info = info_from_path(cfg.weights)
    else:
        info = info_for_variant(cfg.variant, cfg.num_classes, cfg.depth, cfg.decoder_dim)
    if cfg.json:
        print(json.dumps(info, indent=2))
    else:
        print_info(info, Console())
    return 0


def run_convert(cfg: ConvertConfig) -> int:
    _typed(cfg)
    no_stdout(cfg.output, "a checkpoint (a safetensors file is written whole, then renamed)")
    check_new([("output", cfg.output)], cfg.overwrite)
    out = convert(cfg.input, cfg.output, half=cfg.half, description=cfg.description)
    print(f"wrote {out}")
    return 0


def describe(model_or_ckpt: SegFormer3D | Checkpoint, fmt: str) -> dict:
    """Everything `info` shows, as plain data (also what `--json` prints)."""
    if isinstance(model_or_ckpt, Checkpoint):
        meta, sd = model_or_ckpt.meta, model_or_ckpt.state_dict
        count = lambda prefix: sum(v.numel() for k, v in sd.items()  # noqa: E731
                                   if k.startswith(prefix) and "num_batches_tracked" not in k
                                   and "running_" not in k)
        params = {"encoder": count("encoder."), "seg_head": count("seg_head."), "depth_head": count("depth_head.")}
        params["total"] = sum(params.values())
    else:
        meta, params = model_or_ckpt.meta, model_or_ckpt.num_parameters()
    return {
        "format": fmt,
        "variant": meta.variant,
        "embed_dims": list(meta.embed_dims),
        "depths": list(meta.depths),
        "decoder_dim": meta.decoder_dim,
        "parameters": params,
        "num_classes": meta.num_classes,
        "classes": list(meta.class_names),
        "depth": meta.depth.describe() if meta.depth else None,
        "mean": list(meta.mean),
        "std": list(meta.std),
        "input_size": list(meta.input_size),
        "description": meta.description,
    }


def print_info(info: dict, console: Console) -> None:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    p = info["parameters"]
    rows = [
        ("format", info["format"]),
        ("variant", f"{info['variant']} (dims {info['embed_dims']}, depths {info['depths']})"),
        ("decoder width", str(info["decoder_dim"])),
        ("parameters", f"{p['total'] / 1e6:.2f} M (encoder {p['encoder'] / 1e6:.2f} M, "
                       f"seg head {p['seg_head'] / 1e6:.2f} M, depth head {p['depth_head'] / 1e6:.2f} M)"),
        ("classes", f"{info['num_classes']}: {', '.join(info['classes'][:19])}"
                    + (" ..." if info["num_classes"] > 19 else "")),
        ("depth output", info["depth"] or "none (segmentation only)"),
        ("normalisation", f"mean {tuple(info['mean'])} std {tuple(info['std'])} on RGB in [0, 1]"),
        ("input size", "x".join(map(str, info["input_size"])) + " (H x W, recommended)"),
    ]
    if info["description"]:
        rows.append(("notes", info["description"]))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def info_from_path(path: str) -> dict:
    ckpt = read_checkpoint(path)
    if ckpt.encoder_only:
        d = describe(ckpt, ckpt.format)
        d["description"] = (d["description"] + " " if d["description"] else "") + \
            "encoder only: initialises training, cannot run on its own"
        return d
    model = model_from_checkpoint(ckpt, path)  # strict load: info on a file that doesn't load is an error
    return describe(model, ckpt.format)


def info_for_variant(variant: str, num_classes: int, depth: bool, decoder_dim: int | None) -> dict:
    try:
        model = build_model(variant, num_classes=num_classes, depth=depth, decoder_dim=decoder_dim)
    except ValueError as e:
        raise UserError(str(e)) from None
    return describe(model, "freshly built (random weights)")


def convert(src: str, dst: str, half: bool = False, description: str | None = None) -> Path:
    out = Path(dst)
    if out.suffix != ".safetensors":
        raise UserError(f"output '{dst}' must end in .safetensors")
    # before reading anything: never over the input (nor its folder, a Hugging Face directory), and writable
    check_outputs([("input", src)], [("output", out)], {str(out): [out.with_name(out.name + ".partial")]})
    if not writable_file(out):
        raise UserError(f"cannot write '{dst}': not a writable location")
    ckpt = read_checkpoint(src)
    model = model_from_checkpoint(ckpt, src)
    if description is not None:
        model.meta = model.meta.with_(description=description)
    return save_checkpoint(model, out, dtype=torch.float16 if half else None)
