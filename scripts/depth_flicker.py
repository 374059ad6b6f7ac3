"""The model card's depth flicker figure: ``evaluation/flicker.py``'s measure on every frame of a real clip, at
the checkpoint's input box, on the pixels the network calls road or building.

    python scripts/depth_flicker.py [--weights W] [--clip CLIP] [--json OUT]
"""
from __future__ import annotations

import argparse
import json

import av
import torch

from segformer3d_rt.evaluation.flicker import FLICKER_CLASSES, depth_flicker
from segformer3d_rt.model.checkpoints import load_model
from segformer3d_rt.pipeline.forward import Forward
from segformer3d_rt.runtime.backends import torch_network
from segformer3d_rt.runtime.bundled import default_weights
from segformer3d_rt.runtime.sizes import model_input_size

CLIP = "../shared/data/videos/project_video_short_1280x720.mp4"  # never trained on


def clip_outputs(weights: str, clip: str):
    """(classes, depth) at stride-4 resolution of every frame, in order."""
    model = load_model(weights)
    forward = Forward(torch_network(model, torch.device("cpu"), "fp32"))
    with av.open(clip) as c, torch.inference_mode():
        for frame in c.decode(video=0):
            img = torch.from_numpy(frame.to_ndarray(format="rgb24"))[None]
            size = model_input_size(tuple(img.shape[1:3]), model.meta.input_size)
            out = forward.raw(forward.inputs(img, size))
            decoded = forward.decode(out, tuple(out.depth.shape[2:]))  # classes at the depth map's size
            yield decoded.classes[0].numpy(), decoded.depth[0].numpy()


def measure(weights: str, clip: str = CLIP) -> dict:
    names = load_model(weights).meta.class_names
    ids = [names.index(n) for n in FLICKER_CLASSES if n in names]
    return {"clip": clip, "weights": weights, "classes": list(FLICKER_CLASSES),
            **depth_flicker(clip_outputs(weights, clip), ids)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(default_weights()))
    p.add_argument("--clip", default=CLIP)
    p.add_argument("--json")
    a = p.parse_args()
    r = measure(a.weights, a.clip)
    print(f"depth flicker (median |second difference of log depth|, road + building): {r['flicker']:.4f} "
          f"(90th percentile of frames {r['flicker_p90']:.4f}); frame-to-frame change {r['change']:.4f}; "
          f"{r['frames']} frames")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
