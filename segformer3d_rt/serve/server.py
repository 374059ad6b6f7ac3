"""A running `serve`: the network, the hub of streams, the batcher and the HTTP server, started and stopped in
order. The HTTP server (uvicorn) runs in a thread of its own; the caller's thread keeps the signals.

Stopping (:meth:`Server.stop`): every stream stops and its recording is finalised (playable), the WebRTC peers
close, then the HTTP server; nothing is left running.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

from ..errors import UserError, reason
from ..pipeline.infer import InferenceEngine
from ..pipeline.session import load_network
from ..runtime.device import resolve_device
from ..runtime.sizes import padded_box
from .batcher import Batcher
from .config import ServeConfig
from .hub import Hub

log = logging.getLogger(__name__)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound now, so a busy port is one line before anything else starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {reason(e)}") from None
    sock.listen(128)
    return sock


class Server:
    def __init__(self, cfg: ServeConfig) -> None:
        import uvicorn

        from .metrics import registry
        from .web import build_app
        from .webrtc import Peers, available

        self.cfg = cfg
        run = cfg.run
        self.sock = listen(cfg.host, cfg.port)
        try:
            device = resolve_device(run.device)
            self.network, self.weights = load_network(_batched(run, cfg.max_batch), device)
            meta = self.network.meta
            self.box = tuple(run.input_size or meta.input_size)
            self.engine = InferenceEngine(self.network, cuda_graphs=run.cuda_graphs)
            self.hub = Hub(cfg, meta, self.box)
            self.batcher = Batcher(self.engine, self.hub.streams, cfg.max_batch, cfg.max_wait_ms / 1000.0,
                                   self.hub.wake)
            why = available()
            if why:
                log.info("%s", why)
            self.peers = None if why else Peers()
            self._ready = False
            app = build_app(cfg, self.hub, self.batcher, registry(self.hub, self.batcher), lambda: self._ready,
                            self.peers)
            config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2,
                                    access_log=False)
            self.http = uvicorn.Server(config)
        except BaseException:
            self.sock.close()
            raise
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.http.run, kwargs={"sockets": [self.sock]}, name="serve-http",
                                        daemon=True)
        self._thread.start()
        t0 = time.perf_counter()
        self._prepare()
        self.batcher.start()
        for spec in self.cfg.specs:
            self.hub.add(spec)
        self._ready = True
        log.info("%s; ready in %.1f s", self.network.describe(), time.perf_counter() - t0)
        return self

    def _prepare(self) -> None:
        """Compile every padded batch size at the one input shape now, not on a stream's first frames."""
        for b in self.batcher.sizes:
            self.network.prepare((b, 3, *padded_box(self.box)))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._ready = False
        self.hub.close()  # recordings finalised; every viewer's slot closed, so MJPEG responses end
        self.batcher.stop()
        if self.peers is not None and self.peers.loop is not None and self.alive:
            try:
                asyncio.run_coroutine_threadsafe(self.peers.close_all(), self.peers.loop).result(5.0)
            except Exception:  # noqa: BLE001  -- the server is going down anyway
                log.debug("closing WebRTC peers failed", exc_info=True)
        self.http.should_exit = True
        if self._thread is not None:
            self._thread.join(10.0)
        self.sock.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _batched(run: Any, max_batch: int) -> Any:
    from dataclasses import replace

    return replace(run, batch_size=max_batch)  # TensorRT's profile is built for the batches it will see
