#!/usr/bin/env bash
# The first GPU run, in one command (issue 23): on a bare machine that has PyTorch and an NVIDIA GPU,
#   bash scripts/gpu_check.sh [--out DIR]
# installs what is missing from the wheels carried in .whl/ (made here by --fetch-wheels), runs `pytest -m cuda`,
# then every GPU benchmark with --json, and collects results, logs, versions and nvidia-smi into one folder
# (default gpu_results/<UTC time>), ending with summary.json: each target of issue 23, measured or not, met or not.
#   bash scripts/gpu_check.sh --dry-run      the same steps on the CPU with tiny sizes (must pass anywhere)
#   bash scripts/gpu_check.sh --fetch-wheels put the wheels a bare GPU image lacks into .whl/ (run with network
#                                            access to the package index, before carrying the tree to the GPU)
# The clips travel with it: ../shared/data when present, else SEGFORMER3D_SHARED (the tests read the same), else
# .gpu_data/ (copy ../shared/data/videos there to carry it: `bash scripts/gpu_check.sh --pack-clips`).
# Every step runs even when an earlier one fails; the exit status is that of the first failing step.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DRY=0
OUT=""
PY=${PYTHON:-python3}
WHEELS=$ROOT/.whl

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT=$2; shift ;;
    --fetch-wheels)
      mkdir -p "$WHEELS"
      exec "$PY" -m pip download --only-binary=:all: -d "$WHEELS" "av>=14" pytest onnx ;;
    --pack-clips)
      mkdir -p .gpu_data/data/videos
      cp -n ../shared/data/videos/*.mp4 .gpu_data/data/videos/ && du -sh .gpu_data && exit 0 ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

OUT=${OUT:-gpu_results/$(date -u +%Y%m%dT%H%M%SZ)}
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "gpu_check: '$OUT' already holds results; give another --out" >&2; exit 2
fi
mkdir -p "$OUT" || { echo "gpu_check: cannot create '$OUT'" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${SEGFORMER3D_SHARED:-}" ] && [ ! -d ../shared/data ] && [ -d .gpu_data/data ]; then
  export SEGFORMER3D_SHARED=$ROOT/.gpu_data
fi
DATA=${SEGFORMER3D_SHARED:-$ROOT/../shared}/data
STATUS=0
step() {  # step NAME COMMAND...: run it, its output in NAME.log, its status in steps.tsv; never stops the script
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/steps.log"
  local t0=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%d\t%ds\t%s\n' "$name" "$rc" $((SECONDS - t0)) "$*" >>"$OUT/steps.tsv"
  [ $rc -ne 0 ] && { echo "   failed ($rc): tail of $name.log:"; tail -5 "$OUT/$name.log"; } | tee -a "$OUT/steps.log"
  [ $rc -ne 0 ] && [ $STATUS -eq 0 ] && STATUS=$rc
  return 0
}
s3d() { "$PY" -m segformer3d_rt "$@"; }

# 1. what is missing, from the carried wheels (no index: the GPU machine reaches nothing)
install_missing() {
  local need=()
  for mod in av pytest onnx; do "$PY" -c "import $mod" 2>/dev/null || need+=("$mod"); done
  "$PY" -c "import av, sys; sys.exit(int(av.__version__.split('.')[0]) < 14)" 2>/dev/null || need+=("av>=14")
  [ ${#need[@]} -eq 0 ] && { echo "nothing missing"; return 0; }
  [ -d "$WHEELS" ] || { echo "missing ${need[*]} and no $WHEELS (run --fetch-wheels where the index is reachable)"; return 1; }
  "$PY" -m pip install --no-index --find-links "$WHEELS" "${need[@]}"
}
step install install_missing

# 2. the machine: GPU, driver, CUDA and library versions
versions() {
  command -v nvidia-smi >/dev/null && nvidia-smi || echo "no nvidia-smi"
  "$PY" - <<'EOF'
import json, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": platform.processor() or platform.machine()}
for mod in ("av", "timm", "numpy", "cv2", "onnx", "tensorrt", "transformers"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as e:  # noqa: BLE001 - record why, go on
        info[mod] = f"absent ({type(e).__name__})"
try:
    import av
    info["ffmpeg"] = av.library_versions.get("libavcodec")
    info["nvdec"] = "cuda" in __import__("av.codec.hwaccel", fromlist=["x"]).hwdevices_available()
    info["h264_nvenc"] = "h264_nvenc" in av.codecs_available
except Exception as e:  # noqa: BLE001
    info["ffmpeg"] = f"unknown ({e})"
print(json.dumps(info, indent=1))
EOF
}
step versions versions
"$PY" -c "import json,sys; t=open(sys.argv[1]).read(); print(t[t.index('{'):])" "$OUT/versions.log" >"$OUT/versions.json" 2>/dev/null

# 3. the CUDA tests (on the CPU they all skip: the dry run checks they collect and the junit file is written)
step pytest_cuda "$PY" -m pytest -m cuda -q -rs --junitxml="$OUT/pytest_cuda.xml" tests

# 4. benchmarks, each to JSON
WEIGHTS=weights/segformer3d-rt-b0-roads.safetensors
if [ $DRY -eq 1 ]; then
  DEV=cpu; BIG=64x128; SMALL=32x64; ITERS="--warmup 1 --iters 3"; PREC=fp32; MODES=folded; BACKENDS=torch,openvino
  CLIP=samples/synthetic-drive.mp4; FILE_FRAMES=12; LIVE="synthetic:size=64x128,fps=30,frames=30"; BOX=64x128
else
  DEV=cuda; BIG=1024x2048; SMALL=512x1024; ITERS="--warmup 20 --iters 200"; PREC=fp32,fp16; MODES=folded,cudagraph
  BACKENDS=torch,tensorrt; CLIP=$DATA/videos/project_video_short_1280x720.mp4; FILE_FRAMES=0
  LIVE="synthetic:size=720x1280,fps=30,frames=600"; BOX=512x1024
fi
[ -f "$CLIP" ] || CLIP=samples/synthetic-drive.mp4  # no shared clip carried: the bundled one (360x640)
# model only, torch: every size x precision x mode at batch 1, fidelity against fp32 beside each row
step bench_model s3d bench --weights "$WEIGHTS" --device $DEV --sizes $BIG,$SMALL --batch 1 --precision $PREC \
  --mode $MODES $ITERS --json "$OUT/bench_model.json"
# TensorRT fp16 beside torch fp16 (cudagraph) at the same sizes
if [ $DRY -eq 1 ]; then BPREC=fp32; else BPREC=fp16; fi
step bench_backends s3d bench --weights "$WEIGHTS" --device $DEV --sizes $BIG,$SMALL --batch 1 --precision $BPREC \
  --backend $BACKENDS $ITERS --json "$OUT/bench_backends.json"
# a file to an annotated mp4, every frame, against the model alone at the same size (same run)
FILE_LIMIT=(); [ "$FILE_FRAMES" -gt 0 ] && FILE_LIMIT=(--max-frames "$FILE_FRAMES")
step bench_file s3d bench --weights "$WEIGHTS" --device $DEV --source "$CLIP" --sink mp4 --input-size $BOX \
  "${FILE_LIMIT[@]}" --json "$OUT/bench_file.json"
step run_file s3d run "$CLIP" --weights "$WEIGHTS" --device $DEV --input-size $BOX "${FILE_LIMIT[@]}" \
  -o "$OUT/file.mp4" --stats-json "$OUT/run_file.json" --progress none
# a live source at 30 fps: capture-to-output latency against inference, drops counted
step run_live s3d run "$LIVE" --live --weights "$WEIGHTS" --device $DEV --input-size $BOX -o "$OUT/live.mp4" \
  --stats-json "$OUT/run_live.json" --progress none

# 5. the summary: each target, its figure, met or not (absent results are named, never guessed)
step summary "$PY" scripts/gpu_summary.py "$OUT" $([ $DRY -eq 1 ] && echo --dry-run)
cat "$OUT/summary.txt" 2>/dev/null
echo "results in $OUT (steps.tsv: each step's status)"
exit $STATUS
