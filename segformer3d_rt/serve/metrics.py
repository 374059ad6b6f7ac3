"""Prometheus metrics of `serve` (prometheus-client), read from the streams' own statistics at scrape time.

Nothing is counted twice: every figure comes from the same PipelineStats and LogHistograms the page and the API
show. Labels come from bounded sets only, the stream name (at most MAX_STREAMS, checked names) and the stage (a
fixed tuple), never a URL or a path. Buckets are few on purpose: per stream the series stay at most
``SERIES_PER_STREAM`` (the exact p50/p99 are in the API and on the page).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from ..pipeline.histogram import LogHistogram
from .batcher import Batcher
from .hub import Hub

PREFIX = "segformer3d_rt"
STREAM_STAGES = ("decode", "preprocess", "render")  # per stream; inference is per batch (one histogram)
STAGE_BUCKETS = (0.01, 0.05, math.inf)
LATENCY_BUCKETS = (0.05, 0.1, 0.3, 1.0, math.inf)
INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)
FRAME_STAGES = ("capture", "output")  # frames counted where they enter and leave a stream
DROP_STAGES = ("batcher", "render")  # where a newer frame replaces one not yet used
# the stage histograms (buckets + sum + count each), capture-to-output, frames, drops, up, reconnects, mailbox
SERIES_PER_STREAM = (len(STREAM_STAGES) * (len(STAGE_BUCKETS) + 2) + len(LATENCY_BUCKETS) + 2 + len(FRAME_STAGES)
                     + len(DROP_STAGES) + 3)


def buckets(h: LogHistogram, bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs of a LogHistogram at ``bounds`` (its own buckets are 0.5% wide)."""
    return [("+Inf" if math.isinf(b) else repr(b), float(h.count_le(b))) for b in bounds]


class ServeCollector(Collector):
    def __init__(self, hub: Hub, batcher: Batcher) -> None:
        self.hub, self.batcher = hub, batcher

    def collect(self) -> Iterator:
        streams = self.hub.streams()
        frames = CounterMetricFamily(f"{PREFIX}_frames", "frames read from the source (capture) and rendered, what "
                                     "viewers and recordings get (output)", labels=["stream", "stage"])
        dropped = CounterMetricFamily(f"{PREFIX}_frames_dropped", "frames replaced by a newer one before use",
                                      labels=["stream", "stage"])
        reconnects = CounterMetricFamily(f"{PREFIX}_reconnects", "times the source was reopened", labels=["stream"])
        up = GaugeMetricFamily(f"{PREFIX}_source_up", "1 while the source delivers frames", labels=["stream"])
        depth = GaugeMetricFamily(f"{PREFIX}_mailbox_depth", "frames waiting for the batcher (0 or 1)",
                                  labels=["stream"])
        stage = HistogramMetricFamily(f"{PREFIX}_stage_seconds", "time per frame in a stream's own stages",
                                      labels=["stream", "stage"])
        latency = HistogramMetricFamily(f"{PREFIX}_capture_to_output_seconds",
                                        "from leaving the source to the rendered frame", labels=["stream"])
        for s in streams:
            hists, lat, n_in, n_out = s.stats.figures()
            frames.add_metric([s.name, "capture"], n_in)
            frames.add_metric([s.name, "output"], n_out)
            dropped.add_metric([s.name, "batcher"], s.mailbox.dropped)
            dropped.add_metric([s.name, "render"], s.results.dropped)
            reconnects.add_metric([s.name], s.total_reconnects())
            up.add_metric([s.name], 1.0 if s.up else 0.0)
            depth.add_metric([s.name], len(s.mailbox))
            for name in STREAM_STAGES:
                h = hists.get(name) or LogHistogram()
                stage.add_metric([s.name, name], buckets(h, STAGE_BUCKETS), h.sum)
            latency.add_metric([s.name], buckets(lat, LATENCY_BUCKETS), lat.sum)
        yield from (frames, dropped, reconnects, up, depth, stage, latency)

        b = self.batcher
        with b.lock:
            counts = dict(b.batch_hist)
            inference = b.inference.copy()
        sizes = HistogramMetricFamily(f"{PREFIX}_batch_frames", "frames per batch (before padding)")
        acc, pairs = 0, []
        for n in range(1, b.max_batch + 1):
            acc += counts.get(n, 0)
            if n in b.sizes:
                pairs.append((repr(float(n)), float(acc)))
        pairs.append(("+Inf", float(acc)))
        sizes.add_metric([], pairs, float(sum(n * c for n, c in counts.items())))
        yield sizes
        inf = HistogramMetricFamily(f"{PREFIX}_inference_seconds", "time per batch in the network")
        inf.add_metric([], buckets(inference, INFERENCE_BUCKETS), inference.sum)
        yield inf
        streams_g = GaugeMetricFamily(f"{PREFIX}_streams", "streams configured")
        streams_g.add_metric([], len(streams))
        yield streams_g


def registry(hub: Hub, batcher: Batcher) -> CollectorRegistry:
    """A registry of its own (not the process-global default): what one server exposes, nothing else."""
    from prometheus_client.process_collector import ProcessCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(ServeCollector(hub, batcher))
    ProcessCollector(registry=reg)
    return reg
