"""Relative depth from a label map alone ("pop-up" geometry), for real frames that have labels but no depth.

A camera over flat ground sees the ground at row v at depth ~ 1 / (v - v_horizon); anything standing on the
ground (a car, a tree, a wall) is at the depth of the ground where it touches it. So, column by column from
the bottom up: ground pixels get 1 / (v - v_h), and the pixels of the object standing directly on that ground
get the depth of the contact row, as long as the object's label runs unbroken down to the ground. Whatever
cannot be placed this way (a tree seen above a car, sky, void, an object cut by the frame's bottom edge,
anything near the horizon where 1 / (v - v_h) is ill-conditioned) stays 0 = no target.

The scale (camera height x focal length) is unknown, so the result is *relative*: train on it with a
scale-invariant loss only (:func:`~segformer3d_rt.training.losses.scale_invariant_loss`). The horizon row is
a fraction of the frame height, given per dataset (the camera's mounting; 0.5 for a level camera) or estimated
per sequence from the labels themselves (:func:`estimate_horizons`): a horizon 0.05 H off more than doubles the
error of these targets (measured once on rendered streets), and one camera of CamVid sees the horizon 0.15 H
lower in its picture than the other two.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..labels import IGNORE, SKY, LabelSpace

GROUND_CLASSES = frozenset({"road", "sidewalk"})  # flat ground; terrain is not: CamVid merges it with trees


def label_kinds(space: LabelSpace) -> tuple[np.ndarray, np.ndarray]:
    """Per label id: is it ground, is it sky (from the label's set of model classes)."""
    ground = np.array([bool(m) and set(m) <= GROUND_CLASSES for m in space.members])
    sky = np.array([m == (SKY,) for m in space.members])
    return ground, sky


def popup_depth(labels: np.ndarray, ground: np.ndarray, sky: np.ndarray, horizon: float,
                margin: float = 0.06) -> np.ndarray:
    """H x W float32 relative depth (0 = no target) from an H x W label map.

    ground/sky: bool per label id (:func:`label_kinds`); horizon: its row as a fraction of H; margin: rows
    closer to the horizon than margin x H give no target (a small error in the horizon is a large one there).
    """
    h, w = labels.shape
    v_h = horizon * h
    lab = labels.astype(np.int64)
    known = lab != IGNORE
    safe = np.where(known, lab, 0)
    is_ground = known & ground[safe]
    is_object = known & ~ground[safe] & ~sky[safe]
    out = np.zeros((h, w), np.float32)
    contact = np.zeros(w, np.float32)  # depth of the ground the current run stands on (0: none)
    run = np.full(w, -1, np.int64)  # label of the object run standing on that ground; -1: none yet
    for v in range(h - 1, -1, -1):
        d = 1.0 / (v + 0.5 - v_h) if v + 0.5 - v_h > margin * h else 0.0
        g, o = is_ground[v], is_object[v]
        row = lab[v]
        # ground: its own depth, and it is what the next object up stands on
        out[v, g] = d
        contact[g] = d
        run[g] = -1
        # an object pixel continues (or starts, right above ground) the run of one label
        cont = o & (contact > 0) & ((run == -1) | (run == row))
        out[v, cont] = contact[cont]
        run[cont] = row[cont]
        # anything else (sky, void, another label stacked on the object) ends the run until ground again
        broken = ~g & ~cont
        contact[broken] = 0.0
        run[broken] = -1
    return out


def sequence_of(name: str) -> str:
    """The sequence a frame belongs to: its name up to the last '_' (CamVid: 0001TP_006690 -> 0001TP)."""
    return name.rsplit("_", 1)[0] if "_" in name else ""


def estimate_horizons(frames: Iterable[tuple[str, np.ndarray]], ground: np.ndarray, quantile: float = 5.0,
                      min_frames: int = 5) -> dict[str, float]:
    """Horizon row (fraction of the frame height) per sequence, from (name, label map) pairs.

    Flat ground never rises above the horizon, and over a drive it runs out towards it in some frames: the
    horizon is taken as the ``quantile``-th percentile of each frame's topmost ground row, in the central half
    of the columns (the sides show near kerbs, not the road's far end). On rendered drives this lands about
    0.01-0.02 H below the true horizon. Sequences with fewer than ``min_frames`` frames showing ground are left out.
    """
    tops: dict[str, list[float]] = {}
    for name, labels in frames:
        h, w = labels.shape
        centre = labels[:, w // 4: w - w // 4].astype(np.int64)
        known = centre != IGNORE
        rows = np.nonzero((known & ground[np.where(known, centre, 0)]).any(axis=1))[0]
        if len(rows):
            tops.setdefault(sequence_of(name), []).append((rows[0] + 0.5) / h)
    return {seq: float(np.percentile(t, quantile)) for seq, t in sorted(tops.items()) if len(t) >= min_frames}
