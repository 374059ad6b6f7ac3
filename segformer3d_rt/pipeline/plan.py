"""A run's plan: every "auto" and "None means auto" of a RunConfig resolved once, into concrete values.

``session.execute`` builds it as the parts open (device, network, source, outputs), logs it in one line, hands
its values to the stages and reports it in the stats JSON (``plan``). Nothing below the session resolves a
setting again.

Names: the *input box* is what ``--input-size`` (or the checkpoint) gives, the box frames are fitted into; the
*network input* is a frame of this source fitted into it (sides multiples of 32), the size the network runs at.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RunPlan:
    device: str
    backend: str
    precision: str
    precision_note: str  # why that precision ("" when asked for as it is)
    input_box: tuple[int, int]
    network_input: tuple[int, int] | None  # None: known only per frame (an image folder, a camera's first frame)
    batch_size: int
    live: bool
    device_stages: bool  # resize and render on the inference device
    cuda_graphs: bool
    fold_heads: bool
    decoder: str | None
    encoders: tuple[str, ...]  # one line per video output: encoder, preset, quality
    start_frame: int
    max_frames: int | None

    def line(self) -> str:
        size = (f"{self.network_input[0]}x{self.network_input[1]}" if self.network_input else "per frame")
        why = f" ({self.precision_note})" if self.precision_note else ""
        parts = [f"{self.device}, {self.backend} {self.precision}{why}",
                 f"network input {size} (box {self.input_box[0]}x{self.input_box[1]})",
                 f"batch {self.batch_size}", "live: newest frame wins" if self.live else "every frame",
                 "device stages" if self.device_stages else "host stages"]
        if self.cuda_graphs:
            parts.append("CUDA graphs")
        if self.decoder:
            parts.append(f"decoder {self.decoder}")
        parts += [f"encoder {e}" for e in self.encoders]
        if self.start_frame:
            parts.append(f"from frame {self.start_frame}")
        if self.max_frames is not None:
            parts.append(f"at most {self.max_frames} frame(s)")
        return "plan: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_box"] = list(self.input_box)
        d["network_input"] = list(self.network_input) if self.network_input else None
        d["encoders"] = list(self.encoders)
        return d
