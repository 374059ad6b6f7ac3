"""A fleet worker: one compiled network (opened once, when the worker starts), one video at a time through `run`'s
own session, so that a fleet's output is `run`'s output. Under Ray it is an actor; without Ray, one object here.
What it returns is a small row (the video's statistics), never frames."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..pipeline.config import RunConfig
from ..runtime.paths import partial_path


class VideoWorker:
    """``process(source, output)`` -> row; ``progress()`` -> (frames done of the video in hand, its fps), which
    the driver polls while ``process`` runs (a Ray actor with two threads)."""

    def __init__(self, template: RunConfig, threads: int | None = None) -> None:
        import torch

        from ..pipeline.session import load_network

        if threads:
            torch.set_num_threads(max(1, int(threads)))
        # each video's run would log its plan and encoder: the fleet's own lines and summary say what matters
        logging.getLogger("segformer3d_rt.pipeline").setLevel(logging.WARNING)
        self.template = template
        t0 = time.perf_counter()
        # the network for the template, on a placeholder source: what each video's run then reuses
        self.network = load_network(replace(template, source="synthetic:"), threads=int(threads) if threads else None)
        self.startup_s = time.perf_counter() - t0
        self.pid = os.getpid()
        self.node = os.uname().nodename
        self._lock = threading.Lock()
        self._stats: Any = None
        self._stop = threading.Event()

    def ping(self) -> dict[str, Any]:
        return {"pid": self.pid, "node": self.node, "startup_s": self.startup_s}

    def progress(self) -> tuple[int, float | None]:
        with self._lock:
            stats = self._stats
        if stats is None:
            return 0, None
        return stats.frames_out, stats.throughput_fps()

    def stop(self) -> None:
        """Ask the video in hand to stop (it is then reported as not done)."""
        self._stop.set()

    def process(self, cfg: RunConfig) -> dict[str, Any]:
        from ..pipeline.session import execute

        out = Path(cfg.outputs[0])
        for stale in out.parent.glob(f"{out.name}.*.partial"):  # an earlier attempt's, its worker gone
            stale.unlink(missing_ok=True)
        t0 = time.perf_counter()
        self._stop.clear()
        try:
            code, report = execute(cfg, interrupts=self._interrupts, network=self.network)
        except UserError as e:
            return {"status": "failed", "error": str(e), "pid": self.pid, "node": self.node}
        finally:
            with self._lock:
                self._stats = None
        interrupted = bool(report.get("interrupted"))
        error = report.get("error")
        row = {"status": "done" if code == 0 and not error and not interrupted else
               ("not done" if interrupted else "failed"),
               "error": error, "pid": self.pid, "node": self.node, "seconds": time.perf_counter() - t0,
               "frames_in": report["frames"]["in"], "frames_out": report["frames"]["out"],
               "frames_dropped": report["frames"]["dropped"], "throughput_fps": report["throughput_fps"],
               "realtime_factor": report["realtime_factor"], "source_fps": report["source"]["fps"],
               "source_frames": report["source"]["frame_count"],
               "latency_p50_ms": report["latency_ms"]["capture_to_output"]["p50"]}
        if row["status"] == "done" and out.is_file():
            row["bytes"] = out.stat().st_size
        elif out.is_file():  # cut short: kept for a look, under a name no one takes for a finished video
            out.replace(partial_path(out))
        return row

    def _interrupts(self, pipeline: Any):  # noqa: ANN202  -- session.execute's hook: stop when asked
        import contextlib

        with self._lock:
            self._stats = pipeline.stats

        @contextlib.contextmanager
        def watch():  # noqa: ANN202
            done = threading.Event()

            def poll() -> None:
                while not done.wait(0.1):
                    if self._stop.is_set():
                        pipeline.interrupted = True
                        pipeline.abort.set()
                        return
            t = threading.Thread(target=poll, name="fleet-stop", daemon=True)
            t.start()
            try:
                yield
            finally:
                done.set()
                t.join()
        return watch()
