"""The streams of a running server: add, remove, restart, while the batcher keeps going.

The batcher reads ``hub.streams()``, a tuple replaced (never changed in place) on every add or remove, so it never
takes the hub's lock; an API call that stops a stream waits for that stream's threads only.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import UserError
from .config import MAX_STREAMS, ServeConfig, StreamSpec
from .stream import Stream

log = logging.getLogger(__name__)


class NotFound(UserError):
    """No stream of that name (HTTP 404)."""


class Conflict(UserError):
    """A stream of that name exists already (HTTP 409)."""


class Forbidden(UserError):
    """A source kind the config does not allow over the API (HTTP 403)."""


class Hub:
    def __init__(self, cfg: ServeConfig, meta: Any, box: tuple[int, int]) -> None:
        self.cfg, self.meta, self.box = cfg, meta, box
        self.wake = threading.Event()  # set by every stream's mailbox; the batcher waits on it
        self._lock = threading.Lock()
        self._streams: tuple[Stream, ...] = ()
        self.closed = False
        self.last: list[dict[str, Any]] = []  # each stream's final statistics, once closed

    def streams(self) -> tuple[Stream, ...]:
        return self._streams

    def get(self, name: str) -> Stream:
        for s in self._streams:
            if s.name == name:
                return s
        raise NotFound(f"no stream '{name}'")

    def add(self, spec: StreamSpec, from_api: bool = False) -> Stream:
        """Start a stream. ``from_api``: only the source kinds and settings the config allows over HTTP."""
        spec.check()
        if from_api:
            if spec.kind not in self.cfg.allow_sources:
                allowed = ", ".join(self.cfg.allow_sources) or "none"
                raise Forbidden(f"source kind '{spec.kind}' is not allowed over the API (allowed: {allowed})")
            if spec.record:
                raise Forbidden("'record' cannot be set over the API (it would write files); set it in the config")
        run = self.cfg.stream_run(spec)
        with self._lock:
            if self.closed:
                raise UserError("the server is stopping")
            if any(s.name == spec.name for s in self._streams):
                raise Conflict(f"stream '{spec.name}' exists already")
            if len(self._streams) >= MAX_STREAMS:
                raise UserError(f"at most {MAX_STREAMS} streams")
            stream = Stream(spec, run, self.meta, self.box, wake=self.wake, stamp=self.cfg.stamp)
            self._streams = (*self._streams, stream)
        stream.start()
        log.info("stream %s: %s (%s view)", spec.name, spec.source, spec.view)
        return stream

    def remove(self, name: str) -> dict[str, Any]:
        """Stop a stream (its recording finalised) and forget it; returns its last statistics."""
        with self._lock:
            stream = self.get(name)
            self._streams = tuple(s for s in self._streams if s is not stream)
        stream.stop()
        log.info("stream %s removed", name)
        return stream.snapshot()

    def restart(self, name: str) -> Stream:
        stream = self.get(name)
        self.remove(name)
        return self.add(stream.spec)

    def close(self) -> None:
        """Stop every stream (in parallel: each may wait for a stalled read), recordings finalised."""
        with self._lock:
            self.closed = True
            streams, self._streams = self._streams, ()
        threads = [threading.Thread(target=s.stop, name=f"stop-{s.name}") for s in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.last = [s.snapshot() for s in streams]

