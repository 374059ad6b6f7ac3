"""The fleet's plan: one task per video over the workers, retried where a worker died, stopped cleanly.

Executors (one interface, two kinds): :class:`RayExecutor` starts (or joins) a Ray cluster and runs one
:class:`~.worker.VideoWorker` actor per worker (its network compiled once, when it starts); :class:`LocalExecutor`
runs one worker in this process, without Ray. The driver submits a video to each free worker, records every
result in the manifest as it comes, and polls the busy workers for their frame counts (the progress bar).

Ctrl-C / SIGTERM: the first stops handing out videos (those in hand finish); the second asks the workers to stop
the videos in hand, which are recorded as not done (their partial outputs renamed NAME.partial); the next run
continues with them.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError, reason
from .config import FleetConfig
from .inputs import Video, expand
from .manifest import SUMMARY, Manifest
from .worker import VideoWorker

log = logging.getLogger(__name__)


@dataclass
class Task:
    video: Video
    worker: Any
    started: float = field(default_factory=time.perf_counter)


class LocalExecutor:
    """One worker in this process (``--address local``, or Ray not installed); the video runs in a thread so
    that the main thread keeps the signals and the progress view."""

    mode = "local"

    def __init__(self, cfg: FleetConfig) -> None:
        self.workers = [VideoWorker(cfg.run, threads=None)]
        self._done: deque[tuple[Task, dict | BaseException]] = deque()
        self._cond = threading.Condition()

    def info(self) -> list[dict]:
        return [w.ping() for w in self.workers]

    def submit(self, task: Task, run_cfg: Any) -> None:
        def body() -> None:
            try:
                result: dict | BaseException = task.worker.process(run_cfg)
            except BaseException as e:  # noqa: BLE001  -- reported as the video's failure
                result = e
            with self._cond:
                self._done.append((task, result))
                self._cond.notify_all()
        threading.Thread(target=body, name="fleet-local", daemon=True).start()

    def wait(self, timeout: float) -> list[tuple[Task, dict | BaseException]]:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._done), timeout)
            out = list(self._done)
            self._done.clear()
        return out

    def progress(self, workers: list[Any]) -> list[tuple[int, float | None]]:
        return [w.progress() for w in workers]

    def stop(self, worker: Any) -> None:
        worker.stop()

    def replace(self, worker: Any) -> Any:  # a local worker does not die
        return worker

    def close(self) -> None:
        pass


class WorkerDied(Exception):
    """The worker process holding a video died (killed, out of memory, its node lost)."""


class RayExecutor:
    """Ray actors, one per worker. ``address``: None starts a local cluster for this run (``ray.init()``), "auto"
    or "ray://HOST:PORT" join a running one."""

    mode = "ray"

    def __init__(self, cfg: FleetConfig) -> None:
        import ray

        self.ray = ray
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
                              "configure_logging": True}
        try:
            if cfg.address is None:
                ray.init(**kw)
            else:
                ray.init(address=cfg.address, **kw)
        except Exception as e:  # noqa: BLE001  -- Ray's own errors are many kinds: one line
            raise UserError(f"cannot start or join the Ray cluster ({cfg.address or 'local'}): {reason(e)}") from None
        resources = ray.cluster_resources()
        per = cfg.cpus_per_worker
        n = cfg.workers or max(1, int(resources.get("CPU", 1) // per))
        if cfg.gpus_per_worker and not cfg.workers:
            n = max(1, int(resources.get("GPU", 0) // cfg.gpus_per_worker))
        self.actor = ray.remote(VideoWorker).options(num_cpus=per, num_gpus=cfg.gpus_per_worker, max_concurrency=3)
        self.template = cfg.run
        self.threads = max(1, int(per))
        self.workers = [self._new() for _ in range(n)]
        self._refs: dict[Any, Task] = {}
        self._info = self._ping(self.workers)

    def _new(self) -> Any:
        return self.actor.remote(self.template, threads=self.threads)

    def _ping(self, workers: list[Any]) -> list[dict]:
        """Every worker started (all at once, not one after the other) and its network compiled."""
        try:
            return self.ray.get([w.ping.remote() for w in workers], timeout=600)
        except self.ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(getattr(e, "cause", None), UserError) else None
            raise UserError(str(cause) if cause else f"a fleet worker failed to start: {reason(e)}") from None
        except self.ray.exceptions.RayError as e:
            raise UserError(f"a fleet worker failed to start: {reason(e)}") from None

    def info(self) -> list[dict]:
        return self._info

    def submit(self, task: Task, run_cfg: Any) -> None:
        self._refs[task.worker.process.remote(run_cfg)] = task

    def wait(self, timeout: float) -> list[tuple[Task, dict | BaseException]]:
        if not self._refs:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            task = self._refs.pop(ref)
            try:
                out.append((task, self.ray.get(ref)))
            except self.ray.exceptions.RayActorError:
                out.append((task, WorkerDied("its worker died")))
            except self.ray.exceptions.RayTaskError as e:
                out.append((task, e.cause if getattr(e, "cause", None) is not None else e))
        return out

    def progress(self, workers: list[Any]) -> list[tuple[int, float | None]]:
        """Each worker's (frames, fps) of the video in hand; (0, None) for one that does not answer at once."""
        refs = [w.progress.remote() for w in workers]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0.2)
        out = []
        for ref in refs:
            try:
                out.append(self.ray.get(ref) if ref in ready else (0, None))
            except self.ray.exceptions.RayError:
                out.append((0, None))
        return out

    def stop(self, worker: Any) -> None:
        worker.stop.remote()

    def replace(self, worker: Any) -> Any:
        """A new worker in place of a dead one."""
        with_new = self._new()
        self._info += self._ping([with_new])
        self.workers = [with_new if w is worker else w for w in self.workers]
        return with_new

    def close(self) -> None:
        for w in self.workers:
            try:
                self.ray.kill(w)
            except Exception:  # noqa: BLE001  -- already gone
                pass
        self.ray.shutdown()


def executor_for(cfg: FleetConfig) -> LocalExecutor | RayExecutor:
    if cfg.address == "local":
        log.info("fleet: running in this process (--address local), one worker")
        return LocalExecutor(cfg)
    try:
        import ray  # noqa: F401
    except ImportError:
        log.info("fleet: Ray is not installed (pip install \"segformer3d-rt[ray]\"): running in this process, "
                 "one worker")
        return LocalExecutor(cfg)
    return RayExecutor(cfg)


def prepare_out_dir(out_dir: str) -> Path:
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise UserError(f"--output '{out_dir}' is a file; give a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".fleet-{os.getpid()}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write into '{out_dir}': {reason(e)}") from None
    return p


class Fleet:
    """One fleet run: ``run(stop)`` -> the summary. ``stop``: a StopRequest-like object (``count``: signals so
    far). ``view``: told of progress (:class:`~.progress.FleetView`)."""

    def __init__(self, cfg: FleetConfig, view: Any = None) -> None:
        self.cfg = cfg
        self.out_dir = prepare_out_dir(cfg.out_dir)
        self.manifest = Manifest(self.out_dir)
        self.videos = expand(cfg.inputs)
        self.view = view

    def run(self, stop: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        todo: deque[Video] = deque()
        skipped = 0
        for v in self.videos:
            if v.problem:
                self.manifest.record(v.output, source=v.source, status="failed", error=f"{v.source}: {v.problem}")
            elif self.manifest.is_done(v.output, v.source):
                skipped += 1
            else:
                self.manifest.record(v.output, source=v.source, status="pending")
                todo.append(v)
        log.info("fleet: %d video(s): %d to do, %d done before, %d cannot be read", len(self.videos), len(todo),
                 skipped, sum(1 for v in self.videos if v.problem))
        executor = executor_for(self.cfg) if todo else None
        t_ready = time.perf_counter()  # the cluster joined, every worker started and its network compiled
        attempts: dict[str, int] = {}
        busy: dict[int, Task] = {}
        asked_to_stop = False
        try:
            free = list(executor.workers) if executor else []
            if self.view is not None:
                self.view.start(len(todo), [w["pid"] for w in executor.info()] if executor else [])
            while todo or busy:
                while free and todo and stop.count == 0:
                    v = todo.popleft()
                    task = Task(v, free.pop(0))
                    busy[id(task)] = task
                    executor.submit(task, self.cfg.video_run(v.source, str(self.out_dir / v.output)))
                if stop.count >= 2 and not asked_to_stop:
                    asked_to_stop = True
                    for task in busy.values():
                        executor.stop(task.worker)
                if not busy:
                    break  # stopped with videos left: they stay pending
                for task, result in executor.wait(0.5):
                    busy.pop(id(task), None)
                    v = task.video
                    if isinstance(result, WorkerDied) and stop.count:  # the same Ctrl-C reached the worker
                        self.manifest.record(v.output, source=v.source, status="not done", error="interrupted")
                        continue
                    if isinstance(result, WorkerDied):
                        attempts[v.output] = attempts.get(v.output, 0) + 1
                        worker = executor.replace(task.worker)
                        if attempts[v.output] <= self.cfg.retries:
                            log.warning("fleet: the worker of %s died; retrying it", v.source)
                            self.manifest.record(v.output, source=v.source, status="not done",
                                                 error="its worker died; retried")
                            todo.appendleft(v)
                        else:
                            self.manifest.record(v.output, source=v.source, status="failed",
                                                 error=f"its worker died {attempts[v.output]} times")
                        free.append(worker)
                        continue
                    if isinstance(result, BaseException):
                        row = {"status": "failed", "error": f"{type(result).__name__}: {result}"}
                    else:
                        row = result
                    if row.get("error") and not str(row["error"]).startswith(v.source):
                        row["error"] = f"{v.source}: {row['error']}"
                    self.manifest.record(v.output, source=v.source, **row)
                    free.append(task.worker)
                    if self.view is not None:
                        self.view.video_done(row)
                if self.view is not None and busy:
                    tasks = list(busy.values())
                    figures = executor.progress([t.worker for t in tasks])
                    self.view.update({executor.workers.index(t.worker) if t.worker in executor.workers else -1:
                                      (t.video.output, *f) for t, f in zip(tasks, figures)})
        finally:
            if executor is not None:
                executor.close()
            if self.view is not None:
                self.view.stop()
        t1 = time.perf_counter()
        return self._summary((t1 - t0, t_ready - t0, t1 - t_ready), skipped, executor, stop.count > 0)

    def _summary(self, times: tuple[float, float, float], skipped: int, executor: Any, interrupted: bool
                 ) -> dict[str, Any]:
        """``times``: (the whole run, starting the workers, processing) in seconds."""
        seconds, startup, processing = times
        rows = [self.manifest.videos[v.output] for v in self.videos]
        done = [r for r in rows if r.get("status") == "done"]
        frames = sum(r.get("frames_out", 0) for r in done)
        summary = {
            "videos": rows,
            "totals": {"videos": len(rows), "done": len(done), "done_before": skipped,
                       "failed": sum(1 for r in rows if r.get("status") == "failed"),
                       "not_done": sum(1 for r in rows if r.get("status") in ("pending", "not done")),
                       "frames_out": frames, "seconds": seconds, "startup_s": startup, "processing_s": processing,
                       "interrupted": interrupted},
            "failures": [{"source": r.get("source"), "error": r.get("error")} for r in rows
                         if r.get("status") == "failed"],
            "workers": executor.info() if executor is not None else [],
            "mode": executor.mode if executor is not None else None,
        }
        tmp = self.out_dir / f"{SUMMARY}.{os.getpid()}.tmp"
        import json

        tmp.write_text(json.dumps(summary, indent=1, default=str))
        tmp.replace(self.out_dir / SUMMARY)
        return summary
