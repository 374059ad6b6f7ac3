"""What `train` shows while it runs: a rich progress bar on a terminal, a plain line every N steps otherwise."""
from __future__ import annotations

import time

from ..runtime.progress import progress_mode
from .config import TrainConfig


class Reporter:
    """Running means (factor 0.95) of each loss term, the learning rate and images per second."""

    def __init__(self, cfg: TrainConfig, start: int) -> None:
        from rich.console import Console

        self.cfg, self.start = cfg, start
        self.console = Console(stderr=True)
        self.mode = progress_mode(cfg.progress, self.console)
        self.t0 = time.perf_counter()
        self.images = 0
        self.avg: dict[str, float] = {}
        self.progress = None

    def __enter__(self) -> "Reporter":
        if self.mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console)
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=self.cfg.steps, completed=self.start, info="")
        return self

    def step(self, step: int, losses: dict[str, float], lr: float, n: int) -> None:
        self.images += n
        for k, v in losses.items():
            self.avg[k] = v if k not in self.avg else 0.95 * self.avg[k] + 0.05 * v
        rate = self.images / max(1e-9, time.perf_counter() - self.t0)
        terms = " ".join(f"{k} {v:.3f}" for k, v in self.avg.items())
        info = f"{terms} lr {lr:.2e} {rate:.1f} img/s"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)
        elif self.mode == "plain" and (step % self.cfg.log_every == 0 or step == self.cfg.steps):
            print(f"step {step}/{self.cfg.steps} {info}", flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
