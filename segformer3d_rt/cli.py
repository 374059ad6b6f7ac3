"""The `segformer3d-rt` command: parses arguments into each command's config and calls ``commands/``, nothing more.

Every flag is made from its config field (``commands/_flags.py``): help, choices, bounds and the default shown
come from the one place a setting is written. Only the chosen command's flags are built (its config module may
import torch; ``segformer3d-rt --help`` need not).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import __version__
from .errors import UserError

PROG = "segformer3d-rt"
EXAMPLES = argparse.RawDescriptionHelpFormatter


@dataclass(frozen=True)
class Command:
    help: str
    description: str
    epilog: str = ""


COMMANDS: dict[str, Command] = {
    "run": Command("segment + estimate depth on a video, camera, stream or images",
                   "Run the network on a source and show/record the annotated result.",
                   "examples:\n  segformer3d-rt run dashcam.mp4 -o annotated.mp4\n  segformer3d-rt run 0 --show\n"
                   "  segformer3d-rt run rtsp://host/stream --show -o rec.mp4\n  segformer3d-rt run photos/ -o out/"),
    "attention": Command(
        "draw the encoder's attention maps on an image, folder, video or camera",
        "MiT's attention (spatially reduced keys, mapped back onto the frame) for one stage/block/head or, by "
        "default, the last block of each of the four stages in a 2x2 grid: for one query pixel, or the attention "
        "each location receives. It is `run --view attention` with its own defaults: the normal inference path is "
        "untouched; the maps come from the chosen blocks' own query and key projections.",
        "examples:\n  segformer3d-rt attention street.jpg -o attn.png --query 320,200\n"
        "  segformer3d-rt attention clip.mp4 -o attn.mp4 --stage 4 --head 3 --with overlay\n"
        "  segformer3d-rt attention clip.mp4 -o attn.gif --max-frames 50\n"
        "  segformer3d-rt attention photos/ -o maps/ --with depth"),
    "train": Command(
        "train both heads (or either) on synthetic, CamVid, Cityscapes, KITTI or .npy data and video",
        "Train the dual-head network. Datasets: synthetic[:seed=N,n=N,size=HxW] (rendered on the fly), camvid:ROOT, "
        "cityscapes:ROOT, npy:ROOT (original Segformer3D layout), kitti_stereo:ROOT[,split=train|test] (stereo "
        "depth), video:CLIP|FOLDER[,stride=N,size=HxW,crop=T:B:L:R,fov=DEG|intrinsics=fx,fy,cx,cy] (frame triplets "
        "for self-supervised depth; crop= cuts pixels off each side; without fov/intrinsics a 75 degree field of "
        "view is assumed). Give --data several times to mix datasets; each spec may add weight=W (sampling "
        "weight), crop=HxW, scale=LOW-HIGH, sky=M (sky depth target, metres) and popup=H|auto (relative depth made "
        "from the labels, horizon at H x frame height or estimated per sequence), e.g. "
        "--data synthetic:size=128x256,weight=1,scale=1-1 --data camvid:ROOT,weight=2. Each loss is computed only "
        "where its labels exist."),
    "eval": Command("mIoU and depth metrics of a checkpoint on a dataset",
                    "Evaluate: per-class IoU and mIoU, AbsRel, SqRel, RMSE, RMSElog, delta1-3."),
    "bench": Command(
        "measure model-only and whole-pipeline speed (CPU or GPU)",
        "Model only: every combination of --sizes x --batch x --precision x --mode, after warm-up (CUDA events on "
        "GPU). With --source: the whole pipeline on that source, then the model alone at the same input size in "
        "the same run, and their throughput ratio.",
        "examples:\n  segformer3d-rt bench --sizes 512x1024,1024x2048 --precision fp32,fp16 --mode folded,cudagraph"
        "\n  segformer3d-rt bench --source clip.mp4 --input-size 256x512"),
    "export": Command(
        "export a checkpoint to ONNX, OpenVINO IR or a TensorRT engine (metadata inside)",
        "Export the network (folded heads; outputs seg_logits and depth) with the checkpoint's metadata inside the "
        "file, so that `run --weights FILE` works. Every export is checked against the torch model on a frame and "
        "the result printed.",
        "examples:\n  segformer3d-rt export weights.safetensors --format onnx -o model.onnx --dynamic\n"
        "  segformer3d-rt export --format openvino -o model.xml --input-size 288x512\n"
        "  segformer3d-rt export weights.safetensors --format tensorrt -o model.engine  (needs a GPU)"),
    "soak": Command(
        "a long live run with memory, threads and CPU sampled (do they stay flat?)",
        "Run the pipeline live for a long time and sample the process every --interval seconds: resident memory, "
        "threads, open files, CPU (each thread's, the dashboard's apart), frames and latency. Prints the first- "
        "and last-quarter medians; --json keeps every sample.",
        "example:\n  segformer3d-rt soak synthetic:size=128x256,fps=25 --max-frames 6000 --input-size 128x256 "
        "--json soak.json"),
    "serve": Command(
        "many cameras and streams through one batched network, in a browser, with Prometheus metrics",
        "Serve named streams (each any source `run` takes) through one network that batches frames across them; "
        "watch them at http://HOST:PORT/ (WebRTC, or MJPEG), manage them over a REST API (/api/streams), scrape "
        "/metrics. Binds 127.0.0.1 unless told otherwise; any other address needs --token. Ctrl-C stops every "
        "stream and finalises every recording.",
        "examples:\n  segformer3d-rt serve front=rtsp://cam1/stream back=0\n"
        "  segformer3d-rt serve demo=samples/synthetic-drive.mp4 --loop --port 8080\n"
        "  segformer3d-rt serve --config serve.toml --host 0.0.0.0 --token $TOKEN"),
    "fleet": Command(
        "an archive of videos on a Ray cluster (or here), resumable, each output identical to `run`'s",
        "Run `run`'s pipeline over many videos: one task per video over workers that each hold a compiled network "
        "(Ray actors; without Ray or with --address local, one worker in this process). OUTDIR keeps a manifest: a "
        "rerun skips the videos done (checked against their statistics) and retries the rest. Takes `run`'s "
        "settings (view, codec, input size, backend, ...).",
        "examples:\n  segformer3d-rt fleet dashcam/ -o annotated/\n"
        "  segformer3d-rt fleet 'archive/**/*.mp4' list.txt -o out/ --workers 4 --input-size 256x512\n"
        "  segformer3d-rt fleet videos.csv -o out/ --address ray://head:10001 --gpus-per-worker 1"),
    "info": Command("describe a checkpoint (format, size, classes, depth units)",
                    "Describe a checkpoint of any supported format, or a freshly built model."),
    "convert": Command("convert any supported checkpoint to the project's .safetensors",
                       "Convert a checkpoint (Segformer3D .pt, NVlabs .pth, Hugging Face) to the project's "
                       ".safetensors format with metadata."),
    "synth": Command("render a drive through the procedural world to a video",
                     "Render consecutive frames of one drive of the synthetic world (camera images only) to an mp4; "
                     "the bundled sample clip is made this way."),
}

# the settings of `run` that `attention` takes, and the flags it names them by
ATTENTION_SETTINGS = ("source", "outputs", "weights", "attention_stage", "attention_block", "attention_head",
                      "attention_query", "attention_with", "start_frame", "max_frames", "input_size", "device",
                      "precision", "attention_colormap", "attention_alpha", "crf", "show", "progress", "overwrite")
ATTENTION_FLAGS = {"start_frame": "--frame", "attention_colormap": "--colormap", "attention_alpha": "--alpha"}


def _flags_for(name: str, parser: argparse.ArgumentParser):
    """Add the flags of command ``name`` to its parser; returns the handler taking the parsed arguments."""
    from .commands._flags import Flags

    flags = Flags()
    if name in ("run", "attention"):
        from .commands.run import RunConfig, build_config, report_bad_settings, run_pipeline

        if name == "run":
            flags.add(parser, RunConfig, required=("source",))
        else:
            from .commands.attention import run_attention

            flags.add(parser, RunConfig, ATTENTION_SETTINGS, rename=ATTENTION_FLAGS, required=("source", "outputs"))

        def handle(args: argparse.Namespace) -> int:
            try:
                given = flags.values(args) | ({"view": "attention"} if name == "attention" else {})
                cfg = build_config(given.pop("pipeline", None), given, flags.where)
            except UserError as e:  # the stats JSON the flags asked for still says why (as given: raw text)
                report_bad_settings(str(e), args.stats_json if name == "run" else None, args.source, args.weights,
                                    args.outputs, getattr(args, "pipeline", None))
                raise
            return run_pipeline(cfg) if name == "run" else run_attention(cfg)
        return handle
    if name == "soak":
        from .commands.run import RunConfig, build_config
        from .commands.soak import RUN_SETTINGS, SOAK_DEFAULTS, SoakConfig, run_soak

        run_flags = Flags()
        run_flags.add(parser, RunConfig, RUN_SETTINGS, defaults=SOAK_DEFAULTS)
        flags.add(parser, SoakConfig, ("interval_s", "json"))

        def handle(args: argparse.Namespace) -> int:
            given = run_flags.values(args)
            run = build_config(given.pop("pipeline", None), given, run_flags.where)
            return run_soak(_config(SoakConfig, flags, args, run=run))
        return handle
    if name == "serve":
        from .commands.run import RunConfig
        from .commands.serve import RUN_SETTINGS, ServeConfig, build_serve_config, run_serve
        run_flags = Flags()
        run_flags.add(parser, RunConfig, RUN_SETTINGS)
        flags.add(parser, ServeConfig)
        def handle(args: argparse.Namespace) -> int:
            cfg = build_serve_config(flags.values(args), run_flags.values(args), flags.where, run_flags.where)
            return run_serve(cfg)
        return handle
    if name == "fleet":
        from .commands.fleet import RUN_SETTINGS as FLEET_RUN, FleetConfig, fleet_run_template, run_fleet
        from .commands.run import RunConfig
        run_flags = Flags()
        run_flags.add(parser, RunConfig, FLEET_RUN)
        flags.add(parser, FleetConfig)
        def handle(args: argparse.Namespace) -> int:
            run = fleet_run_template(run_flags.values(args), run_flags.where)
            return run_fleet(_config(FleetConfig, flags, args, run=run))
        return handle
    entry: Callable
    if name == "train":
        from .commands.train import TrainConfig as cls, run_train as entry
    elif name == "eval":
        from .commands.eval import EvalConfig as cls, run_eval as entry
    elif name == "bench":
        from .commands.bench import BenchConfig as cls, run_bench as entry
    elif name == "export":
        from .commands.export import ExportConfig as cls, run_export as entry
    elif name == "info":
        from .commands.weights import InfoConfig as cls, run_info as entry
    elif name == "convert":
        from .commands.weights import ConvertConfig as cls, run_convert as entry
    else:
        from .commands.synth import SynthConfig as cls, run_synth as entry
    flags.add(parser, cls)
    return lambda args: entry(_config(cls, flags, args))


def _config(cls: type, flags, args: argparse.Namespace, **fixed):
    """The command's config from the flags given (typed, bounded, named by their flags in errors)."""
    from .commands._flags import make_config

    return make_config(cls, {**flags.values(args), **fixed}, flags.where)


def _command_of(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with the flags of the command ``argv`` names (all commands when it names none: --help)."""
    p = argparse.ArgumentParser(prog=PROG, description="Dual-head SegFormer (semantic segmentation + monocular "
                                                       "depth) on video, in real time.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _command_of(argv)
    for name, cmd in COMMANDS.items():
        parser = sub.add_parser(name, help=cmd.help, description=cmd.description, epilog=cmd.epilog or None,
                                formatter_class=EXAMPLES)
        if name == chosen:
            parser.set_defaults(func=_flags_for(name, parser))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # a real command line (not a call from Python): allocator settings, see _malloc.py
        from ._malloc import reexec_with_tuned_malloc

        reexec_with_tuned_malloc()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
    except UserError as e:  # a flag's own definition refused (never the user's fault): still one line
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
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
