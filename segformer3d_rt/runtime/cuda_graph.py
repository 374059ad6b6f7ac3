"""Replaying a function as a CUDA graph, one static input shape per graph."""
from __future__ import annotations

import torch


class CudaGraphRunner:
    """A static-shape CUDA graph of ``fn``: each call copies the input into place and replays.

    Kernel launches dominate small SegFormers (B0 is launch-bound on big GPUs), which a graph
    removes. The caller keeps one runner per input shape (InferenceEngine: a bounded LRU cache)
    and builds a new one only for a shape it does not hold.
    """

    def __init__(self, fn, example: torch.Tensor, warmup: int = 3) -> None:
        self.static_in = example.clone()
        stream = torch.cuda.Stream(example.device)
        stream.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(stream):  # capture requires warm-up on a side stream
            for _ in range(warmup):
                fn(self.static_in)
        torch.cuda.current_stream(example.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = fn(self.static_in)

    def __call__(self, x: torch.Tensor):
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out
