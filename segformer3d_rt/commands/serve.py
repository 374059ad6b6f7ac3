"""`serve`: named streams through one batched network, a browser viewer, a REST API and Prometheus metrics
(the work is in ``serve/``). Ctrl-C or SIGTERM stops every stream, finalises every recording and exits 130."""
from __future__ import annotations

import logging
import time

from ..errors import UserError
from ..runtime.stop import StopRequest
from ..serve.config import RUN_SETTINGS, ServeConfig, build_serve_config

__all__ = ["RUN_SETTINGS", "ServeConfig", "build_serve_config", "run_serve"]

log = logging.getLogger(__name__)


def run_serve(cfg: ServeConfig) -> int:
    """Serve until a signal; returns the exit code (130 after Ctrl-C / SIGTERM)."""
    from ..serve.server import Server

    with StopRequest(at_once=True):  # a signal during start-up ends it at once (nothing is under way yet)
        server = Server(cfg)
    # a second signal must not cut the recordings' finalisation short: it only says that the stop is under way
    with StopRequest(second=lambda: log.warning("stopping: finalising recordings")) as stop:
        try:
            server.start()
            print(f"serving {len(cfg.specs)} stream(s) at {server.url}", flush=True)
            while not stop.requested and server.alive:
                time.sleep(0.2)
        finally:
            server.stop()
    for s in server.hub.last:
        log.info("stream %s: %d frames out, %d dropped%s", s["name"], s["frames"]["out"], s["frames"]["dropped"],
                 "; " + s["error"] if s["error"] else "")
    if not stop.requested:
        raise UserError("the HTTP server stopped unexpectedly (see the log above)")
    return 130
