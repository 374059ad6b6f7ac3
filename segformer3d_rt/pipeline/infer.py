"""Inference: uint8 batches in, class maps and depth maps out, post-processing on the model's device.

Only uint8 class maps (at model input resolution) and small depth maps (stride 4) cross back to
the host. On CUDA, batches are uploaded from pinned memory on a side stream so that the copy of
the next batch overlaps the current compute (see ``upload``/``run``).

CUDA graphs (``cuda_graphs``): a shape is captured the second time it is seen (``capture_after``) and runs
eagerly the first time, so a file's last short batch or an image folder's one-off size costs no capture;
every graph of an engine shares one memory pool and one capture stream on the engine's device, and capture
is thread-local (the other stage threads keep using the GPU meanwhile; see ``runtime/cuda_graph.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..model.attention import AttentionCapture, AttentionRequest
from ..runtime.backends.base import Network
from ..runtime.cuda_graph import CudaGraphRunner, GraphCache
from ..runtime.device import on_device
from ..runtime.lru import LRUCache
from .forward import Forward


@dataclass
class DeviceBatch:
    images: torch.Tensor  # B x H x W x 3 uint8 on the device
    ready: torch.cuda.Event | None = None


@dataclass
class BatchResult:
    classes: torch.Tensor  # B x H x W uint8, at model input resolution
    depth: torch.Tensor | None  # B x h x w float32 (stride 4), in the checkpoint's depth unit
    images: torch.Tensor | None = None  # the uploaded frames, kept on the device for GPU rendering
    # (start, end) CUDA events around the inference work when the result stays on the device (nothing
    # synchronised, so the wall time of ``run`` is only launch time); see ``gpu_seconds``
    timing: tuple[torch.cuda.Event, torch.cuda.Event] | None = None
    # per frame {BlockRef: BlockAttention} on the host, only when the engine was asked for attention maps
    attention: list[dict] | None = None


class InferenceEngine:
    """Runs the network (:class:`~segformer3d_rt.runtime.backends.base.Network`: torch or an exported backend)
    through the one forward recipe (``forward.py``); argmax and depth conversion stay on the device."""

    def __init__(self, network: Network, cuda_graphs: bool | None = None, keep_on_device: bool = False,
                 capture_after: int = 2, attention: AttentionRequest | None = None) -> None:
        self.network = network
        self.meta = network.meta
        device = network.device
        self.device = device
        self.forward = Forward(network)
        self.cuda_graphs = (device.type == "cuda" and network.graphable) if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and not network.graphable:
            raise UserError(f"CUDA graphs need the torch backend, not {network.name}")
        # attention maps (--view attention) come from forward hooks: eager runs only, a graph replay skips hooks
        self.attention = attention
        if attention is not None:
            self.cuda_graphs = False
            if network.module is None:
                raise UserError(f"--view attention needs the torch backend (its maps come from hooks), "
                                f"not {network.name}")
        if self.cuda_graphs and device.type != "cuda":
            raise UserError("CUDA graphs need a CUDA device")
        self.keep_on_device = keep_on_device  # GPU rendering: outputs stay where they were computed
        # (input shape, model input size) -> graph, captured on a shape's second sighting. 8: a video or camera
        # needs one; an image folder of mixed sizes a few more. All graphs share one memory pool (replays are
        # serial on one stream and their outputs cloned at once, so sharing is safe) and one capture stream on
        # this device; an evicted graph is just dropped (nothing else refers to it) and rebuilt if its shape
        # comes back.
        self._graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._capture_stream = torch.cuda.Stream(device) if self.cuda_graphs else None
        self._graphs = GraphCache(self._build_graph, capture_after=capture_after, maxsize=8)
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        # (shape, dtype) -> two [pinned buffer, last copy's event]. 4 shapes: a run uses one or two (full and
        # last batch); page-locked host memory is scarce (two full-resolution batches per entry). An evicted
        # pair is just dropped: torch's pinned allocator keeps a block until the copies recorded on it finish.
        self._pinned: LRUCache[tuple, list[list]] = LRUCache(4)

    def _build_graph(self, fn, example: torch.Tensor) -> CudaGraphRunner:
        return CudaGraphRunner(fn, example, pool=self._graph_pool, stream=self._capture_stream)

    def _staging(self, images: torch.Tensor) -> list:
        """The next of two reusable pinned buffers of this shape, once its previous copy has finished:
        its slot ``[buffer, event]``, whose event the caller sets to the new copy's."""
        ring = self._pinned.get_or_create(
            (tuple(images.shape), images.dtype),
            lambda: [[torch.empty(images.shape, dtype=images.dtype, pin_memory=True), None] for _ in range(2)])
        ring.append(ring.pop(0))
        slot = ring[-1]
        if slot[1] is not None:
            slot[1].synchronize()  # its last upload must have left before we overwrite it
        return slot

    def upload(self, images: torch.Tensor) -> DeviceBatch:
        """Start copying a host batch to the device: on CUDA through a reusable pinned buffer on the side
        stream, so the copy overlaps whatever the compute stream is doing (the previous batch)."""
        if self.copy_stream is None:
            return DeviceBatch(images.to(self.device))
        slot = self._staging(images)
        buf = slot[0]
        buf.copy_(images)
        with torch.cuda.stream(self.copy_stream):
            dev = buf.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self.copy_stream)
        slot[1] = ready
        # the caching allocator must not recycle this memory while the compute stream still uses it
        dev.record_stream(torch.cuda.current_stream(self.device))
        return DeviceBatch(dev, ready)

    def _compute(self, images: torch.Tensor, size: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 frames -> (uint8 class map at model input size, depth at stride 4), all on the device."""
        decoded = self.forward(images, size)
        return decoded.classes, decoded.depth

    @torch.inference_mode()
    def run(self, batch: DeviceBatch, size: tuple[int, int] | None = None) -> BatchResult:
        with on_device(self.device):  # calls without a device (synchronise, capture) target this one
            return self._run(batch, size)

    def _run(self, batch: DeviceBatch, size: tuple[int, int] | None) -> BatchResult:
        cuda = self.device.type == "cuda"
        stream = torch.cuda.current_stream(self.device) if cuda else None
        if batch.ready is not None:
            stream.wait_event(batch.ready)
        timing = None
        if cuda and self.keep_on_device:  # nothing below synchronises: time the GPU work with events
            timing = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            timing[0].record(stream)
        graph = None
        if self.cuda_graphs:  # None: this shape is new, run eagerly (captured if it comes back)
            graph = self._graphs.runner_for((tuple(batch.images.shape), size),
                                            lambda t: self._compute(t, size), batch.images)
        attention = None
        if graph is not None:
            classes, depth = graph(batch.images)
            classes, depth = classes.clone(), (depth.clone() if depth is not None else None)
        elif self.attention is not None:  # the hooks exist only for this forward
            with AttentionCapture(self.network.module, self.attention) as capture:
                classes, depth = self._compute(batch.images, size)
            attention = capture.frames("cpu")
        else:
            classes, depth = self._compute(batch.images, size)
        if timing is not None:
            timing[1].record(stream)
        if self.keep_on_device:
            return BatchResult(classes, depth, batch.images, timing, attention=attention)
        # one synchronising transfer of small tensors; the logits never leave the device
        return BatchResult(classes.cpu(), depth.cpu() if depth is not None else None, attention=attention)

    def __call__(self, images: torch.Tensor) -> BatchResult:
        return self.run(self.upload(images))


def gpu_seconds(timing: tuple | None, host_s: float) -> float:
    """What a batch cost the inference stage: its host time, or when its GPU work was timed with events (results
    kept on the device), the longer of the two: launch-bound runs are limited by the host, the rest by the GPU.
    Call it once ``timing[1]`` has completed (it synchronises on it otherwise)."""
    if timing is None:
        return host_s
    start, end = timing
    end.synchronize()
    return max(host_s, start.elapsed_time(end) / 1000.0)
