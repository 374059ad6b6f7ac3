"""Depth flicker on a video: how much the depth of a pixel jumps from frame to frame beyond what the motion
explains.

The measure: for each interior frame t and each pixel of the chosen classes (road and building by default,
predicted so in frames t-1, t and t+1), the second difference of log depth in time,

    | log d_t - (log d_{t-1} + log d_{t+1}) / 2 |,

its median over those pixels, then the median over frames. A camera moving smoothly changes a pixel's log depth
nearly linearly over two frames (40 ms at 25 fps), which the second difference cancels; what is left is the
frame-to-frame jitter a viewer sees as flicker (0.01 = depth jumping by about 1% a frame). The first difference
(|log d_t - log d_{t-1}|, motion included) is reported beside it for scale. Log depth, so near and far pixels
count alike; the median, so a few pixels changing class do not dominate.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

FLICKER_CLASSES = ("road", "building")


def depth_flicker(frames: Iterable[tuple[np.ndarray, np.ndarray]], class_ids: list[int]) -> dict[str, float | int]:
    """frames: (classes h x w ints, depth h x w > 0) in time order, all of one size. Returns the median second
    difference (``flicker``), the median first difference (``change``), per-frame medians' spread
    (``flicker_p90``) and the frames and pixels used."""
    window: list[tuple[np.ndarray, np.ndarray]] = []
    second, first, pixels = [], [], 0
    for classes, depth in frames:
        window.append((np.isin(classes, class_ids), np.log(np.maximum(depth, 1e-3))))
        if len(window) > 3:
            window.pop(0)
        if len(window) < 2:
            continue
        (m1, l1), (m2, l2) = window[-2], window[-1]
        both = m1 & m2
        if both.any():
            first.append(float(np.median(np.abs(l2[both] - l1[both]))))
        if len(window) == 3:
            (m0, l0), (m1, l1), (m2, l2) = window
            all3 = m0 & m1 & m2
            if all3.any():
                second.append(float(np.median(np.abs(l1[all3] - 0.5 * (l0[all3] + l2[all3])))))
                pixels += int(all3.sum())
    if not second:
        return {"flicker": float("nan"), "flicker_p90": float("nan"), "change": float("nan"), "frames": 0,
                "pixels": 0}
    return {"flicker": float(np.median(second)), "flicker_p90": float(np.percentile(second, 90)),
            "change": float(np.median(first)), "frames": len(second), "pixels": pixels}
