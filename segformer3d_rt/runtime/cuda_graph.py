"""Replaying a function as a CUDA graph, one static input shape per graph, and the policy of which shapes get one.

Capture happens in a running pipeline, while other threads use the GPU (rendering on the device, NVDEC
decoding, NVENC encoding). torch's default capture mode, ``"global"``, makes every potentially unsafe CUDA call
of *any* thread fail while a capture is underway ("operation not permitted when stream is capturing"), so
graphs here are captured in ``"thread_local"`` mode: only the capturing thread is restricted, and it does
nothing but the captured work. Everything (warm-up, capture stream, the device-wide synchronise that
``torch.cuda.graph`` does on entry) is pinned to the example's device, not the current one (device 0 in
a fresh thread), so ``--device cuda:1`` captures on GPU 1.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import logging

import torch

from .device import on_device
from .lru import LRUCache

CAPTURE_MODE = "thread_local"
log = logging.getLogger(__name__)


class CudaGraphRunner:
    """A static-shape CUDA graph of ``fn``: each call copies the input into place and replays.

    Kernel launches dominate small SegFormers (B0 is launch-bound on big GPUs), which a graph
    removes. ``pool``: a memory pool handle (``torch.cuda.graph_pool_handle()``) shared by the graphs of one
    engine, so that their activations share memory instead of each holding its own; ``stream``: the capture
    stream, the same for every graph of a pool (torch's advice for pool sharing). Graphs sharing a pool must be
    replayed one at a time on one stream and their outputs consumed (cloned) before another replay, which is
    how :class:`~segformer3d_rt.pipeline.infer.InferenceEngine` uses them.
    Capture it under ``torch.inference_mode()`` (or no_grad) so that no autograd state is recorded.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any], example: torch.Tensor, warmup: int = 3,
                 pool: Any = None, stream: torch.cuda.Stream | None = None,
                 capture_error_mode: str = CAPTURE_MODE) -> None:
        device = example.device
        self.device = device
        with on_device(device):
            self.static_in = example.clone()
            stream = stream if stream is not None else torch.cuda.Stream(device)
            if stream.device != device:
                raise ValueError(f"capture stream is on {stream.device}, the input on {device}")
            current = torch.cuda.current_stream(device)
            stream.wait_stream(current)
            with torch.cuda.stream(stream):  # capture requires warm-up on a side stream
                for _ in range(warmup):
                    fn(self.static_in)
            current.wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode):
                self.static_out = fn(self.static_in)

    def __call__(self, x: torch.Tensor):
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


class GraphCache:
    """Which input shapes get a graph, and the graphs: a shape is captured the ``capture_after``-th time it is
    seen (2 by default) and runs eagerly before that; at most ``maxsize`` graphs are kept (LRU).

    Capturing costs a device-wide synchronise, three warm-up runs and the capture itself, which only pays
    off for a shape that repeats: a file's last, short batch or an image folder's one-off size would
    otherwise be captured mid-run for a single use. ``build(fn, example)`` makes a runner (a
    :class:`CudaGraphRunner` in production, a fake in tests). Counts of shapes seen are bounded too.
    Not thread-safe for captures: one inference thread uses it.
    """

    def __init__(self, build: Callable[[Callable, torch.Tensor], Any], capture_after: int = 2,
                 maxsize: int = 8, seen_max: int = 64) -> None:
        if capture_after < 1:
            raise ValueError(f"capture_after must be at least 1, got {capture_after}")
        self._build = build
        self.capture_after = capture_after
        self.graphs: LRUCache[Hashable, Any] = LRUCache(maxsize)
        self._seen: LRUCache[Hashable, int] = LRUCache(seen_max)
        self.captures = 0  # graphs built so far (an evicted shape that comes back is built again)
        self.failed: str | None = None  # why a capture failed: every shape then runs eagerly

    def runner_for(self, key: Hashable, fn: Callable, example: torch.Tensor) -> Any | None:
        """The graph of ``key``, built now if this is its ``capture_after``-th sighting; None: run eagerly."""
        if self.failed is not None:
            return None
        graph = self.graphs.get(key)
        if graph is not None:
            return graph
        seen = (self._seen.get(key) or 0) + 1
        self._seen[key] = seen
        if seen < self.capture_after:
            return None
        try:
            graph = self._build(fn, example)
        except RuntimeError as e:  # one op that cannot be captured: the run goes on eagerly, said once
            self.failed = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            log.warning("CUDA graph capture failed (%s); running eagerly from now on", self.failed)
            return None
        self.graphs[key] = graph
        self.captures += 1
        return graph

    def __len__(self) -> int:
        return len(self.graphs)

    def keys(self) -> list:
        return self.graphs.keys()

    def values(self) -> list:
        return self.graphs.values()
