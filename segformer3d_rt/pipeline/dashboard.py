"""What the user sees in the terminal while a pipeline runs, and the summary at the end.

A rich live view (progress bar with ETA for files, stage table) on a terminal; plain log lines
every few seconds otherwise (CI logs, pipes); nothing with progress="none".

The live view pulls: ``Dashboard`` is a rich renderable whose ``__rich__`` reads a snapshot of the
stats, and ``rich.live.Live`` renders it from its own thread at ``refresh_per_second``. Nothing is
done for the view per frame, and a snapshot costs the same however long the run has been going.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..runtime.progress import progress_mode
from rich.table import Table

from .stats import STAGES, PipelineStats


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def stage_table(snap: dict[str, Any], title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("latency (ms)")
    for col in ("p50", "p95", "p99", "max"):
        t.add_column(col, justify="right")
    stages = snap["latency_ms"]["stages"]
    for name in STAGES:
        if name in stages:
            s = stages[name]
            t.add_row(name, _ms(s["p50"]), _ms(s["p95"]), _ms(s["p99"]), _ms(s["max"]))
    e2e = snap["latency_ms"]["capture_to_output"]
    t.add_row("[bold]capture→output[/]", _ms(e2e["p50"]), _ms(e2e["p95"]), _ms(e2e["p99"]), _ms(e2e["max"]))
    gaps = snap.get("frame_interval_ms")
    if gaps and gaps["count"]:
        t.add_row("[dim]output interval[/]", _ms(gaps["p50"]), _ms(gaps["p95"]), _ms(gaps["p99"]), _ms(gaps["max"]))
    return t


def counts_line(snap: dict[str, Any]) -> str:
    f = snap["frames"]
    fps = snap["throughput_fps"]
    parts = [f"frames in {f['in']} out {f['out']} dropped {f['dropped']}",
             f"{fps:.2f} FPS" if fps else "- FPS"]
    if snap.get("realtime_factor"):
        parts.append(f"{snap['realtime_factor']:.2f}x real time")
    if snap.get("reconnects"):
        parts.append(f"reconnects {snap['reconnects']}")
    return ", ".join(parts)


class Dashboard:
    """The live view of a run; ``with dashboard:`` shows it (rich mode) until the block ends.

    Rendering it (``console.print(dashboard)``, or ``Live(dashboard)`` refreshing) always shows the
    current stats; ``update()`` is only needed for the plain mode's periodic log line.
    """

    REFRESH_PER_SECOND = 4

    def __init__(self, stats: PipelineStats, mode: str, total: int | None, source_fps: float | None,
                 description: str, console: Console | None = None) -> None:
        self.stats = stats
        self.total = total
        self.source_fps = source_fps
        self.console = console or Console(stderr=True)
        self.mode = progress_mode(mode, self.console)
        self.description = description
        self._live: Live | None = None
        self._last_plain = time.perf_counter()
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=self.console)
        self._task = self._progress.add_task("frames", total=total, rate="")

    def __enter__(self) -> "Dashboard":
        if self.mode != "none":
            self.console.print(f"[bold]source[/]: {self.description}" if self.mode == "rich"
                               else f"source: {self.description}", highlight=False)
        if self.mode == "rich":
            # Live's refresh thread renders ``self`` (i.e. calls __rich__) at its own pace
            self._live = Live(self, console=self.console, refresh_per_second=self.REFRESH_PER_SECOND,
                              transient=True)
            self._live.__enter__()
        return self

    def __rich__(self) -> Group:
        snap = self.stats.snapshot(self.source_fps)
        fps = snap["throughput_fps"]
        self._progress.update(self._task, completed=snap["frames"]["out"],
                              rate=f"{fps:.1f} FPS" if fps else "")
        return Group(self._progress, stage_table(snap), counts_line(snap))

    def update(self) -> None:
        """Plain mode: a log line every 5 s. Rich mode: nothing to do, Live pulls the view itself."""
        if self.mode == "plain" and time.perf_counter() - self._last_plain >= 5.0:
            self._last_plain = time.perf_counter()
            snap = self.stats.snapshot(self.source_fps)
            e2e = snap["latency_ms"]["capture_to_output"]
            total = f"/{self.total}" if self.total else ""
            print(f"progress: {snap['frames']['out']}{total} frames, {counts_line(snap)}, "
                  f"latency p50 {_ms(e2e['p50'])} ms", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def summary(self, snap: dict[str, Any]) -> None:
        print_summary(snap, self.mode, self.console)


def print_summary(snap: dict[str, Any], mode: str, console: Console | None = None) -> None:
    """The table and counts shown at the end of a run (``snap``: a stats snapshot, or a report holding one);
    nothing with mode "none"."""
    if mode == "none":
        return
    console = console or Console(stderr=True)
    console.print(stage_table(snap, title="segformer3d-rt summary"))
    console.print(counts_line(snap), highlight=False)
