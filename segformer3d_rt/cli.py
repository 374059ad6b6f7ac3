"""The `segformer3d-rt` command: parses arguments into each command's config and calls ``commands/``, nothing more."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import UserError

PROG = "segformer3d-rt"


def _cmd_info(args: argparse.Namespace) -> int:
    from .commands.weights import InfoConfig, run_info

    return run_info(InfoConfig(weights=args.weights, variant=args.variant, num_classes=args.num_classes,
                               decoder_dim=args.decoder_dim, depth=not args.no_depth, json=args.json))


def _cmd_convert(args: argparse.Namespace) -> int:
    from .commands.weights import ConvertConfig, run_convert

    return run_convert(ConvertConfig(args.input, args.output, half=args.half, description=args.description))


def _size(text: str | None, what: str = "size") -> tuple[int, int] | None:
    from .commands import parse_size

    return parse_size(text, what=what) if text else None


def _cmd_run(args: argparse.Namespace) -> int:
    from .commands.run import build_config, report_bad_settings, run_pipeline

    try:
        overrides = {
            "source": args.source, "weights": args.weights, "outputs": args.output or None,
            "show": True if args.show else None, "live": args.live, "device": args.device,
            "precision": args.precision, "backend": args.backend,
            "input_size": _size(args.input_size, "--input-size"),
            "batch_size": args.batch_size, "queue_size": args.queue_size, "view": args.view, "alpha": args.alpha,
            "legend": args.legend, "hud": args.hud, "colormap": args.colormap,
            "depth_range": tuple(args.depth_range) if args.depth_range else None,
            "depth_smoothing": args.depth_smoothing,
            "codec": args.codec, "crf": args.crf, "preset": args.preset, "realtime": args.realtime, "bitrate": args.bitrate,
            "audio": args.audio, "max_frames": args.max_frames, "stats_json": args.stats_json,
            "progress": args.progress, "timeout_s": args.timeout, "fold_heads": args.fold_heads,
            "device_stages": args.device_stages, "cuda_graphs": args.cuda_graphs, "hw_decode": args.hw_decode,
            **_attention_overrides(args),
        }
        cfg = build_config(args.pipeline, overrides)
    except UserError as e:
        report_bad_settings(str(e), args.stats_json, args.source, args.weights, args.output, args.pipeline)
        raise
    return run_pipeline(cfg)


def _attention_overrides(args: argparse.Namespace) -> dict:
    """run's --stage/--block/--head/--query/--with as RunConfig fields (None: not given)."""
    from .commands.attention import parse_head, parse_query, parse_with

    return {"attention_stage": args.stage, "attention_block": args.block,
            "attention_head": parse_head(args.head) if args.head is not None else None,
            "attention_query": parse_query(args.query) if args.query is not None else None,
            "attention_with": parse_with(args.beside) or None}


def _add_attention_flags(g: argparse._ArgumentGroup) -> None:
    """The map selection, shared by `attention` and `run --view attention`."""
    g.add_argument("--stage", type=int, metavar="1-4", help="one encoder stage (default: all four in a 2x2 grid)")
    g.add_argument("--block", type=int, metavar="N", help="block of the stage, from 1 (default: its last)")
    g.add_argument("--head", metavar="N|mean", help="attention head, from 1, or mean (default mean)")
    g.add_argument("--query", metavar="X,Y", help="query pixel of the source: its attention over the image "
                   "(default: the attention each location receives, the mean over queries; in the window a click "
                   "moves it, a right click clears it)")
    g.add_argument("--with", dest="beside", action="append", metavar="overlay|depth",
                   help="draw a head's output beside the maps (repeatable, or overlay,depth)")


def _cmd_attention(args: argparse.Namespace) -> int:
    from .commands.attention import AttentionConfig, parse_head, parse_query, parse_with, run_attention

    return run_attention(AttentionConfig(
        source=args.source, output=args.output, weights=args.weights, stage=args.stage, block=args.block,
        head=parse_head(args.head) if args.head is not None else "mean",
        query=parse_query(args.query) if args.query is not None else None, beside=parse_with(args.beside),
        frame=args.frame, max_frames=args.max_frames, input_size=_size(args.input_size, "--input-size"),
        device=args.device, precision=args.precision, colormap=args.colormap, alpha=args.alpha, crf=args.crf))


def _add_attention_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "attention", help="draw the encoder's attention maps on an image, folder, video or camera",
        description="MiT's attention (spatially reduced keys, mapped back onto the frame) for one stage/block/head "
                    "or, by default, the last block of each of the four stages in a 2x2 grid: for one query pixel, "
                    "or the attention each location receives. The normal inference path is untouched: the maps "
                    "come from the chosen blocks' own query and key projections.",
        epilog="examples:\n  segformer3d-rt attention street.jpg -o attn.png --query 320,200\n"
               "  segformer3d-rt attention clip.mp4 -o attn.mp4 --stage 4 --head 3 --with overlay\n"
               "  segformer3d-rt attention clip.mp4 -o attn.gif --max-frames 50\n"
               "  segformer3d-rt attention photos/ -o maps/ --with depth",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("source", help="image or folder of images, video file, camera index, stream URL or synthetic:")
    a.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="a .png/.jpg picture (one frame, see --frame), a .mp4/.mkv/.mov video, a .gif, or a folder "
                        "(one PNG per frame)")
    a.add_argument("--weights", help="checkpoint, any supported format (default: the bundled B0 weights)")
    _add_attention_flags(a.add_argument_group("maps"))
    a.add_argument("--frame", type=int, default=0, metavar="N",
                   help="for a picture output: draw frame N of the source (default 0)")
    a.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    a.add_argument("--input-size", metavar="HxW", help="model input box (default: the checkpoint's)")
    a.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a.add_argument("--precision", default="auto", help="auto | fp32 | fp16 | bf16 (the maps are fp32 either way)")
    a.add_argument("--colormap", default="inferno", help="colour map of the maps (default inferno)")
    a.add_argument("--alpha", type=float, default=0.6, help="weight of the map over the greyed frame (default 0.6)")
    a.add_argument("--crf", type=int, default=23, help="video quality (libx264 CRF, default 23)")
    a.set_defaults(func=_cmd_attention)


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "run", help="segment + estimate depth on a video, camera, stream or images",
        description="Run the network on a source and show/record the annotated result.",
        epilog="examples:\n  segformer3d-rt run dashcam.mp4 -o annotated.mp4\n  segformer3d-rt run 0 --show\n"
               "  segformer3d-rt run rtsp://host/stream --show -o rec.mp4\n  segformer3d-rt run photos/ -o out/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("source", help="video file, camera index or /dev/videoN, rtsp/rtmp/http(s) URL, image or "
                                  "folder of images, or synthetic:[seed=N,size=HxW,fps=F,frames=N]")
    r.add_argument("-o", "--output", action="append", metavar="PATH",
                   help="write an annotated .mp4 (or .mkv/.mov), or images into a directory; repeatable")
    r.add_argument("--show", action="store_true", help="open a live window (q or Esc quits)")
    r.add_argument("--weights", help="checkpoint (default: the bundled B0 weights)")
    r.add_argument("--pipeline", metavar="PRESET", help="TOML preset: a file or a name in pipelines/ "
                                                         "(webcam, dashcam-file, benchmark); flags override it")
    g = r.add_argument_group("processing")
    g.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="newest frame wins, drops counted (default: on for cameras/URLs, off for files)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument("--precision", help="auto | fp32 | fp16 | bf16 (auto: fp16 autocast on CUDA; on the CPU bf16 "
                                       "where OpenVINO has it and it keeps the outputs, else fp32)")
    g.add_argument("--backend", help="auto | torch | openvino | onnxruntime | tensorrt (auto: OpenVINO on the CPU, "
                                     "torch on CUDA, TensorRT for an .engine)")
    g.add_argument("--input-size", metavar="HxW", help="model input box; the frame is fitted keeping its "
                                                       "aspect ratio, sides rounded to multiples of 32")
    g.add_argument("--batch-size", type=int, help="frames per batch for files (live sources use 1)")
    g.add_argument("--queue-size", type=int, help="frames buffered between stages (files)")
    g.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    g.add_argument("--timeout", type=float, metavar="S", help="open/read timeout for cameras and streams")
    g.add_argument("--fold-heads", action=argparse.BooleanOptionalAction, default=None,
                   help="fold the linear decoder steps for inference (exact, faster; default on)")
    g.add_argument("--device-stages", action=argparse.BooleanOptionalAction, default=None,
                   help="resize and render on the inference device, download only the final frame "
                        "(default: on for CUDA)")
    g.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="replay inference as a CUDA graph per input shape (default: on for CUDA)")
    v = r.add_argument_group("rendering")
    v.add_argument("--view", help="overlay | seg | depth | side-by-side | grid | attention (default overlay)")
    v.add_argument("--alpha", type=float, help="class colour weight in the overlay (default 0.5)")
    v.add_argument("--legend", action=argparse.BooleanOptionalAction, default=None, help="class legend")
    v.add_argument("--hud", action=argparse.BooleanOptionalAction, default=None, help="FPS/latency overlay")
    v.add_argument("--colormap", help="depth colour map: turbo, magma, plasma, inferno, viridis (near is warm)")
    v.add_argument("--depth-range", type=float, nargs=2, metavar=("NEAR", "FAR"),
                   help="fixed depth colour range (default: a robust range smoothed over frames)")
    v.add_argument("--depth-smoothing", type=float, metavar="W",
                   help="share of each new frame in the smoothed depth colour range (default 0.05; 1 = per frame)")
    _add_attention_flags(r.add_argument_group("attention view (--view attention)"))
    o = r.add_argument_group("video output")
    o.add_argument("--codec", help="video encoder: auto (h264_nvenc on CUDA runs when available, else libx264; "
                   "the default) or any FFmpeg encoder name")
    o.add_argument("--hw-decode", action=argparse.BooleanOptionalAction, default=None,
                   help="NVIDIA decoding of video files (default: tried on CUDA runs, software fallback)")
    o.add_argument("--crf", type=int, help="constant rate factor for x264/x265 (default 23)")
    o.add_argument("--preset", help="encoder preset (default: medium for files, veryfast/superfast in real time)")
    o.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                   help="favour keeping up with the source over file size: a fast encoder preset, crf kept "
                        "(default: on for cameras and streams, off for files, which still keep every frame)")
    o.add_argument("--bitrate", help="target bitrate, e.g. 8M (codecs without CRF)")
    o.add_argument("--audio", action=argparse.BooleanOptionalAction, default=None,
                   help="copy the source's audio into the mp4 (default on; --no-audio drops it)")
    s = r.add_argument_group("statistics")
    s.add_argument("--stats-json", metavar="PATH", help="write all statistics as JSON (schema in README)")
    s.add_argument("--progress", choices=("auto", "rich", "plain", "none"), default=None,
                   help="live terminal view (auto: rich on a terminal, plain lines otherwise)")
    r.set_defaults(func=_cmd_run)


def _cmd_train(args: argparse.Namespace) -> int:
    from .commands.train import TrainConfig, run_train

    given = {k: v for k, v in vars(args).items() if v is not None}
    cfg = TrainConfig(**{k: given[k] for k in TrainConfig.__dataclass_fields__ if k in given and k not in
                         ("crop", "freeze", "scale", "input_size", "data")})
    if args.data:
        cfg.data = tuple(args.data)
    if args.crop:
        cfg.crop = _size(args.crop)
    if args.input_size:
        cfg.input_size = _size(args.input_size)
    if args.scale:
        from .commands import parse_range

        cfg.scale = parse_range(args.scale, ",", "--scale")
    if args.freeze:
        cfg.freeze = tuple(args.freeze)
    return run_train(cfg)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .commands.eval import EvalConfig, run_eval

    return run_eval(EvalConfig(
        data=args.data, weights=args.weights, split=args.split, input_size=_size(args.input_size),
        max_depth=args.max_depth, limit=args.limit, device=args.device, precision=args.precision,
        workers=args.workers, json=args.json, backend=args.backend, save=args.save))


def _cmd_synth(args: argparse.Namespace) -> int:
    from .commands.synth import SynthConfig, run_synth

    return run_synth(SynthConfig(args.output, seed=args.seed, frames=args.frames, size=_size(args.size),
                                 fps=args.fps, crf=args.crf))


def _list(text: str, conv=str, what: str = "") -> tuple:
    """'a,b,c' -> (a, b, c), each converted (a UserError names a value that does not convert)."""
    try:
        return tuple(conv(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{what} wants comma-separated numbers, not '{text}'") from None


def _cmd_bench(args: argparse.Namespace) -> int:
    from .commands import parse_size
    from .commands.bench import BenchConfig, run_bench

    sizes = _list(args.sizes, parse_size) if args.sizes else ((_size(args.input_size),) if args.input_size else None)
    return run_bench(BenchConfig(
        weights=args.weights, variant=args.variant, sizes=sizes or BenchConfig.sizes,
        batch=_list(args.batch, int, "--batch"), precision=_list(args.precision), mode=_list(args.mode),
        warmup=args.warmup, iters=args.iters, device=args.device, threads=args.threads, source=args.source,
        sink=args.sink, input_size=_size(args.input_size), pipeline_batch=args.pipeline_batch,
        pipeline_precision=args.pipeline_precision, max_frames=args.max_frames, repeat=args.repeat,
        json=args.json, backend=_list(args.backend), compare=_list(args.compare) if args.compare else ()))


def _cmd_export(args: argparse.Namespace) -> int:
    from .commands.export import ExportConfig, run_export

    return run_export(ExportConfig(weights=args.weights, format=args.format, output=args.output,
                                   input_size=_size(args.input_size, "--input-size"), dynamic=args.dynamic,
                                   precision=args.precision, check_image=args.check_image))


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser(
        "export", help="export a checkpoint to ONNX, OpenVINO IR or a TensorRT engine (metadata inside)",
        description="Export the network (folded heads; outputs seg_logits and depth) with the checkpoint's "
                    "metadata inside the file, so that `run --weights FILE` works. Every export is checked "
                    "against the torch model on a frame and the result printed.",
        epilog="examples:\n  segformer3d-rt export weights.safetensors --format onnx -o model.onnx --dynamic\n"
               "  segformer3d-rt export --format openvino -o model.xml --input-size 288x512\n"
               "  segformer3d-rt export weights.safetensors --format tensorrt -o model.engine  (needs a GPU)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("weights", nargs="?", help="checkpoint (default: the bundled weights)")
    x.add_argument("--format", required=True, choices=("onnx", "openvino", "tensorrt"))
    x.add_argument("-o", "--output", required=True, help="output file: .onnx, .xml (+ .bin beside it) or .engine")
    x.add_argument("--input-size", metavar="HxW", help="export size (default: the checkpoint's input size)")
    x.add_argument("--dynamic", action="store_true", help="let H and W vary (the batch always may)")
    x.add_argument("--precision", default="auto", help="onnx: fp32 | fp16 (LayerNorm and softmax stay fp32); "
                   "openvino: fp32 | fp16 (weights stored as fp16); tensorrt: fp16 | fp32. auto: fp16 for "
                   "tensorrt, fp32 otherwise")
    x.add_argument("--check-image", metavar="PATH", help="check the export on this image (default: a "
                   "procedural driving scene)")
    x.set_defaults(func=_cmd_export)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "bench", help="measure model-only and whole-pipeline speed (CPU or GPU)",
        description="Model only: every combination of --sizes x --batch x --precision x --mode, after warm-up "
                    "(CUDA events on GPU). With --source: the whole pipeline on that source, then the model alone "
                    "at the same input size in the same run, and their throughput ratio.",
        epilog="examples:\n  segformer3d-rt bench --sizes 512x1024,1024x2048 --precision fp32,fp16 "
               "--mode folded,cudagraph\n  segformer3d-rt bench --source clip.mp4 --input-size 256x512",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--weights", help="checkpoint (default: a random model of --variant)")
    b.add_argument("--variant", default="b0", help="b0..b5 when no --weights (default b0)")
    b.add_argument("--sizes", help="comma-separated HxW (model only; default --input-size, else 512x1024)")
    b.add_argument("--batch", "--batch-size", dest="batch", default="1",
                   help="comma-separated batch sizes (model only)")
    b.add_argument("--backend", default="torch", help="comma-separated torch,openvino,onnxruntime,tensorrt "
                   "(model only: a sweep; exported backends run their own compiled graph, --mode applies to torch; "
                   "with --source: the one backend of the pipeline and of the model alone)")
    b.add_argument("--compare", help="'transformers': also time Hugging Face's single-head "
                   "SegformerForSemanticSegmentation of the same variant (random weights) and print the ratio")
    b.add_argument("--precision", default="fp32", help="comma-separated fp32,fp16,bf16 (model only)")
    b.add_argument("--mode", default="folded", help="comma-separated eager,folded,compile,cudagraph")
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--iters", type=int, default=30)
    b.add_argument("--device", default="auto")
    b.add_argument("--threads", type=int, help="CPU threads for torch, and for OpenVINO and ONNX Runtime in the "
                   "model-only sweep (default: every core)")
    b.add_argument("--source", help="measure the whole pipeline on this source instead")
    b.add_argument("--sink", choices=("null", "mp4"), default="null", help="pipeline output (default null)")
    b.add_argument("--input-size", metavar="HxW", help="pipeline model input box (model only: the size when no "
                   "--sizes)")
    b.add_argument("--pipeline-batch", type=int, default=None, help="pipeline batch size")
    b.add_argument("--pipeline-precision", default=None, help="pipeline precision (auto|fp32|fp16|bf16)")
    b.add_argument("--max-frames", type=int, help="pipeline: stop after N frames")
    b.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="pipeline: N rounds of (pipeline, model only); the round with the median ratio is reported "
                        "(steadier on machines whose speed drifts)")
    b.add_argument("--json", metavar="PATH", help="write all results as JSON")
    b.set_defaults(func=_cmd_bench)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train both heads (or either) on synthetic, CamVid, Cityscapes or .npy data",
                       description="Train the dual-head network. Datasets: synthetic[:seed=N,n=N,size=HxW] "
                                   "(rendered on the fly), camvid:ROOT, cityscapes:ROOT, npy:ROOT (original "
                                   "Segformer3D layout), kitti_stereo:ROOT[,split=train|test] (stereo depth), "
                                   "video:CLIP|FOLDER[,stride=N,size=HxW,crop=T:B:L:R,fov=DEG|intrinsics=fx,fy,cx,cy] "
                                   "(frame triplets for self-supervised depth; crop= cuts pixels off each side; "
                                   "without fov/intrinsics a 75 degree field of view is assumed). "
                                   "Give --data several times to mix datasets; each spec may "
                                   "add weight=W (sampling weight), crop=HxW, scale=LOW-HIGH, sky=M (sky depth target, metres) and "
                                   "popup=H|auto (relative depth made from the labels, horizon at H x frame height or "
                                   "estimated per sequence), e.g. "
                                   "--data synthetic:size=128x256,weight=1,scale=1-1 --data camvid:ROOT,weight=2. "
                                   "Each loss is computed only where its labels exist.")
    t.add_argument("--data", action="append", help="dataset spec, repeatable (default synthetic)")
    t.add_argument("--split", help="dataset split (default train)")
    t.add_argument("--out", help="run directory for checkpoints (default runs/train)")
    t.add_argument("--variant", help="b0..b5 (default b0)")
    t.add_argument("--num-classes", type=int)
    t.add_argument("--decoder-dim", type=int)
    t.add_argument("--crop", metavar="HxW", help="training crop (default 256x512)")
    t.add_argument("--scale", metavar="MIN,MAX", help="random zoom range before cropping (default 0.5,2.0)")
    t.add_argument("--input-size", metavar="HxW", help="recommended inference input stored in the checkpoint "
                   "(default: the crop)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--steps", type=int, help="iterations (default 10000)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="peak AdamW learning rate (default 6e-4)")
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--warmup", type=int, help="linear warm-up iterations, then poly decay")
    t.add_argument("--poly-power", type=float)
    t.add_argument("--seg-weight", type=float)
    t.add_argument("--depth-weight", type=float)
    t.add_argument("--depth-loss", help="log-l1 (default), l1, berhu, silog, mse (the original's)")
    t.add_argument("--silog-lambda", type=float)
    t.add_argument("--photometric-weight", type=float, help="weight of the self-supervised loss of video sources "
                   "(default 1)")
    t.add_argument("--smoothness", type=float, help="edge-aware depth smoothness of video sources (default 1e-3)")
    t.add_argument("--pose-lr", type=float, help="peak learning rate of the pose network of video sources "
                   "(default 1e-3)")
    t.add_argument("--pose-warmup", type=int, help="steps in which video sources train the pose network only "
                   "(default 200)")
    t.add_argument("--freeze", action="append", choices=("encoder", "seg_head", "depth_head"),
                   help="freeze a part (repeatable); --freeze encoder --freeze seg_head is the original's "
                        "depth-head-only training")
    t.add_argument("--init", help="initialise from a MiT ImageNet file (encoder) or any checkpoint")
    t.add_argument("--resume", help="resume a run directory (or its last.state.pt)")
    t.add_argument("--seed", type=int)
    t.add_argument("--workers", type=int, help="data loader processes (default 1)")
    t.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision on CUDA")
    t.add_argument("--device", help="auto | cpu | cuda[:N]")
    t.add_argument("--save-every", type=int)
    t.add_argument("--log-every", type=int)
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--progress", choices=("auto", "rich", "plain", "none"), default=None)
    t.add_argument("--balance", type=float, help="rare-label weighting power for datasets that count their labels "
                   "(CamVid): (median freq / freq) ** POWER (default 0.5; 0 = off)")
    t.add_argument("--sky-depth", type=float, help="depth target in metres for sky pixels without depth "
                   "(default 100: sky is taught as far; 0 = off; per dataset: sky=M in its spec)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="mIoU and depth metrics of a checkpoint on a dataset",
                       description="Evaluate: per-class IoU and mIoU, AbsRel, SqRel, RMSE, RMSElog, delta1-3.")
    e.add_argument("--weights", help="checkpoint (default: the bundled weights)")
    e.add_argument("--data", required=True, help="synthetic[:seed=N,n=N,size=HxW] | camvid:ROOT[,split=val] | "
                   "kitti:ROOT | kitti_stereo:ROOT[,split=train|test] | cityscapes:ROOT | npy:ROOT")
    e.add_argument("--split", default="val")
    e.add_argument("--input-size", metavar="HxW", help="model input box (default: the checkpoint's)")
    e.add_argument("--max-depth", type=float, default=80.0, help="ignore ground truth beyond this (default 80)")
    e.add_argument("--limit", type=int, help="evaluate only the first N images")
    e.add_argument("--device", default="auto")
    e.add_argument("--precision", default="fp32", help="auto | fp32 | fp16 | bf16")
    e.add_argument("--backend", default="auto", help="auto | torch | openvino | onnxruntime | tensorrt "
                   "(auto: OpenVINO on the CPU, torch on CUDA, TensorRT for an .engine)")
    e.add_argument("--workers", type=int, default=0)
    e.add_argument("--json", metavar="PATH", nargs="?", const="-", help="write JSON to PATH (or stdout with -); "
                   "per_image holds each image's own figures")
    e.add_argument("--save", metavar="DIR", help="write a picture per image scored into DIR (a new or empty folder): "
                   "image, ground truth, prediction and error side by side")
    e.set_defaults(func=_cmd_eval)


def _cmd_soak(args: argparse.Namespace) -> int:
    from .commands.run import build_config
    from .commands.soak import SoakConfig, run_soak

    run = build_config(args.pipeline, {
        "source": args.source, "weights": args.weights, "outputs": args.output or None,
        "live": True if args.live is None else args.live, "device": args.device, "precision": args.precision,
        "backend": args.backend, "input_size": _size(args.input_size, "--input-size"),
        "max_frames": args.max_frames, "progress": args.progress, "timeout_s": args.timeout})
    return run_soak(SoakConfig(run=run, interval_s=args.interval, json=args.json))


def _add_soak_parser(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser(
        "soak", help="a long live run with memory, threads and CPU sampled (do they stay flat?)",
        description="Run the pipeline live for a long time and sample the process every --interval seconds: "
                    "resident memory, threads, open files, CPU (each thread's, the dashboard's apart), frames "
                    "and latency. Prints the first- and last-quarter medians; --json keeps every sample.",
        epilog="example:\n  segformer3d-rt soak synthetic:size=128x256,fps=25 --max-frames 6000 "
               "--input-size 128x256 --json soak.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("source", help="as for run: synthetic:..., a video file (paced), camera index, URL")
    k.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (default: until Ctrl-C)")
    k.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between samples (default 5)")
    k.add_argument("--json", metavar="PATH", help="write every sample, the summary and the run's report")
    k.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="paced, newest frame wins (default on, even for files)")
    k.add_argument("-o", "--output", action="append", metavar="PATH", help="also record (as for run)")
    k.add_argument("--weights", help="checkpoint (default: the bundled B0 weights)")
    k.add_argument("--pipeline", metavar="PRESET", help="TOML preset, as for run; flags override it")
    k.add_argument("--input-size", metavar="HxW", help="model input box (default: the checkpoint's)")
    k.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    k.add_argument("--precision", help="auto | fp32 | fp16 | bf16")
    k.add_argument("--backend", help="auto | torch | openvino | onnxruntime | tensorrt")
    k.add_argument("--timeout", type=float, metavar="S", help="open/read timeout for cameras and streams")
    k.add_argument("--progress", choices=("auto", "rich", "plain", "none"), default=None,
                   help="the dashboard (default auto: rich on a terminal)")
    k.set_defaults(func=_cmd_soak)


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
    conv.add_argument("--description", help="a note stored in the metadata (what the weights were trained on)")
    conv.set_defaults(func=_cmd_convert)

    _add_run_parser(sub)
    _add_attention_parser(sub)
    _add_train_parser(sub)
    _add_bench_parser(sub)
    _add_export_parser(sub)
    _add_soak_parser(sub)

    s = sub.add_parser("synth", help="render a drive through the procedural world to a video",
                       description="Render consecutive frames of one drive of the synthetic world (camera images "
                                   "only) to an mp4; the bundled sample clip is made this way.")
    s.add_argument("-o", "--output", required=True, help="output video (.mp4)")
    s.add_argument("--seed", type=int, default=7, help="world seed (default 7)")
    s.add_argument("--frames", type=int, default=250, help="number of frames (default 250)")
    s.add_argument("--size", default="360x640", metavar="HxW", help="frame size (default 360x640)")
    s.add_argument("--fps", type=float, default=25.0)
    s.add_argument("--crf", type=int, default=23, help="libx264 quality (default 23)")
    s.set_defaults(func=_cmd_synth)

    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # a real command line (not a call from Python): allocator settings, see _malloc.py
        from ._malloc import reexec_with_tuned_malloc

        reexec_with_tuned_malloc()
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
