#!/usr/bin/env bash
# The recipe of the bundled default weights and sample clip (see MODEL_CARD.md). Run from the repository root
# in the project's environment, with the shared data beside it (DATA=../shared/data by default). CPU only:
# about 65 minutes on 2 cores for step 1 and about 60 for step 2 (THREADS=1: one for the network, one for the data
# worker; longer when the machine is shared); on a GPU add nothing, it is picked up (--device auto).
# `bash weights/recipe.sh` runs every step; `bash weights/recipe.sh 3` starts at step 3 (after the training runs).
# A training step refuses a run folder that already holds a run: move runs/b0-roads* away to train them again.
set -euo pipefail
RUN1=${RUN1:-runs/b0-roads}
RUN=${RUN:-runs/b0-roads-horizon}
DATA=${DATA:-../shared/data}
FROM=${1:-1}
OUT=weights/segformer3d-rt-b0-roads.safetensors
# glibc returns freed memory to the OS eagerly; the renderer's per-frame buffers then page-fault on every
# frame. Higher thresholds make rendering ~15% faster and change no result.
export MALLOC_TRIM_THRESHOLD_=134217728 MALLOC_MMAP_THRESHOLD_=33554432

# 1. fine-tune the previous bundled B0 (synthetic world only, recipe of git history; kept under runs/ as the
#    start) on a mix: the procedural world (seg + depth, whole frames at 128x256 and at 256x512, so depth holds
#    at the inference size; whole frames because a pixel's height in the frame is the strongest depth cue and
#    cropping hides it) and CamVid train (seg only, its labels as sets of Cityscapes
#    classes; zoom 0.5-1.25, 256x320 crops, flips, colour, blur, noise; rare labels weighted up). Synthetic sky
#    pixels are taught as far (100 m); CamVid's are not (sky=0): a depth target on one class only of real
#    images biased everything near the horizon towards far. 2000 steps of 8: 20% synthetic at each size, 60% CamVid.
if [ "$FROM" -le 1 ]; then
  INIT=${INIT:-runs/b0-synthetic.safetensors}
  mkdir -p runs
  [ -f "$INIT" ] || git show 3becf75:weights/segformer3d-rt-b0-synthetic.safetensors > "$INIT"
  segformer3d-rt train --init "$INIT" \
    --data synthetic:size=128x256,crop=128x256,scale=1-1,weight=1 \
    --data synthetic:seed=1,size=256x512,crop=256x512,scale=1-1,weight=1 \
    --data "camvid:$DATA/camvid,split=train,weight=3,sky=0" --crop 256x320 --scale 0.5,1.25 \
    --input-size 288x512 --steps 2000 --batch-size 8 --lr 6e-4 --warmup 100 --depth-loss log-l1 \
    --balance 0.5 --sky-depth 100 --seed 0 --threads "${THREADS:-1}" --workers 1 --save-every 250 --log-every 50 \
    --progress plain --out "$RUN1"
fi

# 2. fine-tune step 1's result with depth on real frames too: CamVid's labels give a relative "pop-up" depth
#    (ground at 1/(v - v_horizon), the horizon placed per sequence from the labels; anything standing on the ground at
#    the depth of its contact row; the rest no target), scored by a per-image scale-invariant log-L1, so real
#    walls, trees and cars standing near the horizon are put as near as the road they stand on. Fresh synthetic
#    scenes (sets 2 and 3), more of them at 256x512. 1500 steps of 8: 20% / 30% synthetic, 50% CamVid.
if [ "$FROM" -le 2 ]; then
  segformer3d-rt train --init "$RUN1/last.safetensors" \
    --data synthetic:seed=2,size=128x256,crop=128x256,scale=1-1,weight=1 \
    --data synthetic:seed=3,size=256x512,crop=256x512,scale=1-1,weight=1.5 \
    --data "camvid:$DATA/camvid,split=train,weight=2.5,sky=0,popup=auto" --crop 256x320 --scale 0.5,1.25 \
    --input-size 288x512 --steps 1500 --batch-size 8 --lr 3e-4 --warmup 50 --depth-loss log-l1 \
    --balance 0.5 --sky-depth 100 --seed 1 --threads "${THREADS:-1}" --workers 1 --save-every 250 --log-every 50 \
    --progress plain --out "$RUN"
fi

# 3. fp16 safetensors with metadata (about 8 MB)
if [ "$FROM" -le 3 ]; then
  segformer3d-rt convert "$RUN/last.safetensors" -o "$OUT" --half --description \
    "B0 by weights/recipe.sh: the procedural driving world (seg + depth) and CamVid train (seg, research-only terms)"
fi

# 4. figures for the model card: CamVid val (never trained on), 200 held-out synthetic scenes of set 7 (at the
#    checkpoint's input box, as `run` would, and at their native 128x256), the KITTI frame against LiDAR
if [ "$FROM" -le 4 ]; then
  segformer3d-rt eval --weights "$OUT" --data "camvid:$DATA/camvid,split=val" --json "$RUN/camvid_val.json"
  segformer3d-rt eval --weights "$OUT" --data synthetic:seed=7,n=200,size=128x256 --json "$RUN/held_out.json"
  segformer3d-rt eval --weights "$OUT" --data synthetic:seed=7,n=200,size=128x256 --input-size 128x256 \
    --json "$RUN/held_out_128x256.json"
  segformer3d-rt eval --weights "$OUT" --data "kitti:$DATA/depth_samples/kitti" --json "$RUN/kitti.json"
fi

# 5. the sample clip: a drive through world 7 (a held-out world)
if [ "$FROM" -le 5 ]; then
  [ -f samples/synthetic-drive.mp4 ] || segformer3d-rt synth -o samples/synthetic-drive.mp4 --seed 7 --frames 300 --size 360x640
fi
