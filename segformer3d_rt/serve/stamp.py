"""A capture time painted into each rendered frame, for glass-to-glass latency (``serve --stamp``).

The wall-clock millisecond the frame left its source (mod 2^32) is drawn as 32 black/white blocks of
``BLOCK`` pixels along the frame's top edge, most significant bit first, over a white band. The viewer page
(``?g2g=1``) draws each displayed frame onto a canvas, reads the blocks back at their centres and subtracts
from its own clock: the same machine's clock on loopback, so the difference is the whole path (render,
encode, network, decode, display). Big high-contrast blocks survive JPEG and VP8.
"""
from __future__ import annotations

import time

import numpy as np

BITS = 32
BLOCK = 8
WIDTH = BITS * BLOCK  # frames narrower than this are not stamped


def wall_ms(t_perf: float) -> int:
    """A ``time.perf_counter()`` instant as wall-clock milliseconds (mod 2^32)."""
    return int((time.time() - (time.perf_counter() - t_perf)) * 1000.0) & 0xFFFFFFFF


def paint(image: np.ndarray, ms: int) -> np.ndarray:
    """Draw ``ms`` into ``image`` (RGB, in place) and return it."""
    if image.shape[1] < WIDTH or image.shape[0] < BLOCK:
        return image
    for i in range(BITS):
        bit = (ms >> (BITS - 1 - i)) & 1
        image[:BLOCK, i * BLOCK:(i + 1) * BLOCK] = 0 if bit else 255
    return image


def read(image: np.ndarray) -> int | None:
    """The stamp of ``image`` (what the page does in JavaScript), None when the frame is too small."""
    if image.shape[1] < WIDTH or image.shape[0] < BLOCK:
        return None
    grey = image[BLOCK // 2, BLOCK // 2::BLOCK][:BITS].astype(np.float32).mean(axis=-1)
    ms = 0
    for g in grey:
        ms = (ms << 1) | int(g < 128)
    return ms


JS_READ = f"""
function readStamp(ctx, width) {{
  if (width < {WIDTH}) return null;
  const row = ctx.getImageData(0, {BLOCK // 2}, {WIDTH}, 1).data;
  let ms = 0;
  for (let i = 0; i < {BITS}; i++) {{
    const p = (i * {BLOCK} + {BLOCK // 2}) * 4;
    const grey = (row[p] + row[p + 1] + row[p + 2]) / 3;
    ms = ms * 2 + (grey < 128 ? 1 : 0);
  }}
  return ms;
}}
"""
