"""The `segformer3d-rt` command: parses arguments and calls into the package, nothing more."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import UserError

PROG = "segformer3d-rt"


def _cmd_info(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .commands.weights import info_for_variant, info_from_path, print_info

    if args.weights is None and args.variant is None:
        raise UserError("give a weights file, or --variant b0..b5 to describe a freshly built model")
    if args.weights is not None:
        info = info_from_path(args.weights)
    else:
        info = info_for_variant(args.variant, args.num_classes, not args.no_depth, args.decoder_dim)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_info(info, Console())
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .commands.weights import convert

    out = convert(args.input, args.output, half=args.half)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Dual-head SegFormer (semantic segmentation + monocular depth) on video, in real time.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="describe a checkpoint (format, size, classes, depth units)",
                          description="Describe a checkpoint of any supported format, or a freshly built model.")
    info.add_argument("weights", nargs="?", help="checkpoint file or Hugging Face directory")
    info.add_argument("--variant", help="describe a freshly built model of this size instead (b0..b5)")
    info.add_argument("--num-classes", type=int, default=19, help="classes of the freshly built model")
    info.add_argument("--decoder-dim", type=int, default=None, help="decoder width of the freshly built model")
    info.add_argument("--no-depth", action="store_true", help="freshly built model without a depth head")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=_cmd_info)

    conv = sub.add_parser("convert", help="convert any supported checkpoint to the project's .safetensors",
                          description="Convert a checkpoint (Segformer3D .pt, NVlabs .pth, Hugging Face) "
                                      "to the project's .safetensors format with metadata.")
    conv.add_argument("input", help="checkpoint file or Hugging Face directory")
    conv.add_argument("-o", "--output", required=True, help="output .safetensors path")
    conv.add_argument("--half", action="store_true", help="store float16 tensors (half the size)")
    conv.set_defaults(func=_cmd_convert)

    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=f"{PROG}: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
