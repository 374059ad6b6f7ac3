"""The fleet's progress: one rich bar over videos and frames with each worker's FPS on a terminal, a plain line
every few seconds elsewhere (logs, CI), nothing with ``--progress none``."""
from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..runtime.progress import progress_mode

PLAIN_EVERY_S = 5.0


class FleetView:
    def __init__(self, mode: str = "auto") -> None:
        console = Console(stderr=True)
        self.mode = progress_mode(mode, console)
        self.console = console
        self._progress: Progress | None = None
        self._videos = self._frames = None
        self.total = self.done = self.frames_done = 0
        self._workers: dict[int, tuple[str, int, float | None]] = {}
        self._last_plain = 0.0

    def start(self, total: int, pids: list[int]) -> None:
        self.total = total
        if self.mode == "rich":
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[workers]}"),
                                      console=self.console, transient=False)
            self._progress.start()
            self._videos = self._progress.add_task("videos", total=total, workers="")
            self._frames = self._progress.add_task("frames", total=None, workers="")

    def video_done(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.frames_done += int(row.get("frames_out") or 0)
        if self.mode == "plain":
            fps = row.get("throughput_fps")
            print(f"fleet: {self.done}/{self.total} {row.get('status')}: {row.get('frames_out', 0)} frames"
                  + (f" at {fps:.1f} FPS" if fps else "") + (f" ({row['error']})" if row.get("error") else ""),
                  file=sys.stderr, flush=True)

    def update(self, workers: dict[int, tuple[str, int, float | None]]) -> None:
        self._workers = workers
        in_hand = sum(f for _, f, _ in workers.values())
        line = "  ".join(f"w{i + 1} {fps:.1f} FPS" if fps else f"w{i + 1} -" for i, (_, _, fps) in
                         sorted(workers.items()))
        if self._progress is not None:
            self._progress.update(self._videos, completed=self.done, workers=line)
            self._progress.update(self._frames, completed=self.frames_done + in_hand, workers="")
        elif self.mode == "plain" and time.monotonic() - self._last_plain > PLAIN_EVERY_S:
            self._last_plain = time.monotonic()
            print(f"fleet: {self.done}/{self.total} videos, {self.frames_done + in_hand} frames; {line}",
                  file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.update(self._videos, completed=self.done)
            self._progress.stop()
