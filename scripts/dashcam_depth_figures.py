"""The model card's dashcam figures: on 5 frames spread over the real 720p clip (every 40th of the first 200), at
the checkpoint's input box, the share of sky and of vehicles in the top fifth, the median depth of the bottom
fifth (road) and of rows 35-50% (the scene at the horizon, sky left out), and the network's own sky depth.
tests/test_bundled.py checks the same quantities on the same outputs (it calls dashcam_outputs).

    python scripts/dashcam_depth_figures.py [WEIGHTS] [CLIP]
"""
from __future__ import annotations

import sys

import av
import numpy as np
import torch
import torch.nn.functional as F

from segformer3d_rt.labels import SKY
from segformer3d_rt.model.checkpoints import load_model
from segformer3d_rt.runtime.bundled import default_weights
from segformer3d_rt.runtime.normalize import normalize
from segformer3d_rt.runtime.sizes import model_input_size

VEHICLES = ("car", "truck", "bus", "train")


def dashcam_outputs(weights: str, clip: str, n: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(classes, depth in metres) at stride 4 of n frames spread over the clip, at the checkpoint's input box."""
    model = load_model(weights).eval()
    meta = model.meta
    with av.open(clip) as c:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(200), c.decode(video=0)) if i % 40 == 0][:n]
    out = []
    for img in frames:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=model_input_size(img.shape[:2], meta.input_size), mode="bilinear",
                          antialias=True, align_corners=False)
        with torch.no_grad():
            o = model(normalize(x, meta.mean, meta.std, scale=255.0))
        out.append((o.seg_logits.argmax(1)[0].numpy(), meta.depth.to_depth(o.depth.float())[0, 0].numpy()))
    return out


def main(weights: str, clip: str) -> None:
    names = load_model(weights).meta.class_names
    sky = names.index(SKY)
    vehicles = [names.index(n) for n in VEHICLES]
    for cls, depth in dashcam_outputs(weights, clip):
        h = cls.shape[0]
        top = cls[: h // 5]
        band = slice(int(0.35 * h), h // 2)
        horizon = depth[band][cls[band] != sky]
        print(f"top fifth: sky {100 * (top == sky).mean():.0f}%, vehicles {100 * np.isin(top, vehicles).mean():.1f}%; "
              f"road (bottom fifth) {np.median(depth[-h // 5:]):.1f} m; horizon {np.median(horizon):.1f} m; "
              f"sky's own depth {np.median(depth[cls == sky]):.1f} m")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(default_weights()),
         sys.argv[2] if len(sys.argv) > 2 else "../shared/data/videos/project_video_short_1280x720.mp4")
