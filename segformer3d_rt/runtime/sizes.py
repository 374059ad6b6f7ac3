"""Image sizes: 'HxW' text -> (H, W), and the model input size a frame is resized to."""
from __future__ import annotations

from ..errors import UserError
# MAX_SIDE: the largest side of a size anyone gives (input box, crop, synthetic frames): beyond it a typo such as
# 100000x100000 would only be found when memory runs out. Its home is the metadata schema, which bounds a
# checkpoint's input size by the same figure.
from ..model.metadata import MAX_SIDE

# MiT's deepest stage sees the input at stride 32: every network input side is a multiple of it
STRIDE = 32


def check_size(hw: tuple[int, int], *, limit: int = MAX_SIDE, smallest: int = STRIDE,
               what: str = "size") -> tuple[int, int]:
    """``hw`` itself when each side is in [smallest, limit]; else a UserError naming ``what`` and the bound."""
    h, w = hw
    if h < smallest or w < smallest:
        raise UserError(f"{what}: {h}x{w} is too small (at least {smallest}x{smallest})")
    if h > limit or w > limit:
        raise UserError(f"{what}: {h}x{w} is too large (at most {limit} per side)")
    return h, w


def parse_size(text: str, *, limit: int = MAX_SIDE, smallest: int = STRIDE, what: str = "size") -> tuple[int, int]:
    """'256x512' -> (256, 512), height first; each side in [smallest, limit]."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{what} '{text}' is not HxW, e.g. 512x1024") from None
    return check_size((h, w), limit=limit, smallest=smallest, what=what)


def parse_range(text: str, sep: str, what: str) -> tuple[float, float]:
    """'0.5,1.25' (with ``sep`` ',') -> (0.5, 1.25); 0 < low <= high. ``what`` names the setting in errors."""
    example = sep.join(("0.5", "1.25"))
    try:
        lo, hi = (float(v) for v in text.split(sep))
    except ValueError:
        raise UserError(f"{what} wants LOW{sep}HIGH (for example {example}), not '{text}'") from None
    if not 0 < lo <= hi:
        raise UserError(f"{what} LOW{sep}HIGH needs 0 < LOW <= HIGH, not '{text}'")
    return lo, hi


def model_input_size(frame_hw: tuple[int, int], box_hw: tuple[int, int], multiple: int = STRIDE) -> tuple[int, int]:
    """Fit the frame into the box keeping its aspect ratio, then round each side to a multiple of the stride.

    Rounding (rather than padding) keeps every input pixel useful; the aspect ratio is kept to within
    one stride step.
    """
    h, w = frame_hw
    s = min(box_hw[0] / h, box_hw[1] / w)
    return (max(multiple, int(round(h * s / multiple)) * multiple),
            max(multiple, int(round(w * s / multiple)) * multiple))


def padded_box(box_hw: tuple[int, int], multiple: int = STRIDE) -> tuple[int, int]:
    """The one input shape that holds :func:`model_input_size` of any frame for this box (each side rounded up
    to the stride): `serve` pads every stream's frames to it so that frames of any shape batch together."""
    return (-(-box_hw[0] // multiple) * multiple, -(-box_hw[1] // multiple) * multiple)


def check_multiple(hw: tuple[int, int], what: str) -> tuple[int, int]:
    """``hw`` when both sides are multiples of :data:`STRIDE`; else a UserError naming ``what``."""
    if hw[0] % STRIDE or hw[1] % STRIDE:
        raise UserError(f"{what} {hw[0]}x{hw[1]}: both sides must be multiples of {STRIDE} (the network's stride)")
    return hw
