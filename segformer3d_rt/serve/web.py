"""The HTTP side of `serve` (FastAPI): REST API, the viewer pages, MJPEG, WebRTC offers, live stats, /metrics.

Nothing here touches a source or the network: handlers read a stream's LatestFrame slot and statistics, or ask
the hub to add / remove / restart (those run in the thread pool, so a stream that takes seconds to stop never
blocks the event loop, the batcher or another viewer). Every error is an HTTP status with ``{"error": "one
line"}``. With a token, every route but /healthz needs it: ``Authorization: Bearer T``, ``?token=T`` (which also
sets a same-site cookie, so the page's own requests carry it) or that cookie.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any, Callable

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError
from ..pipeline.render import VIEWS
from .config import ServeConfig, StreamSpec
from .hub import Conflict, Forbidden, Hub, NotFound
from .page import index_page, stream_page

log = logging.getLogger(__name__)
COOKIE = "segformer3d_rt_token"
BOUNDARY = "frame"
STATS_PERIOD_S = 0.5


def _status(e: UserError) -> int:
    return 404 if isinstance(e, NotFound) else 409 if isinstance(e, Conflict) else \
        403 if isinstance(e, Forbidden) else 400


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(cfg: ServeConfig, hub: Hub, batcher: Any, registry: Any, ready: Callable[[], bool],
              webrtc: Any = None) -> FastAPI:
    """The app. ``ready()``: the network is compiled and the batcher runs (/readyz). ``webrtc``: the
    :class:`~.webrtc.Peers` of this server (None: WebRTC unavailable, the page uses MJPEG)."""
    app = FastAPI(title="segformer3d-rt serve", docs_url=None, redoc_url=None, openapi_url=None)
    token = cfg.token

    @app.middleware("http")
    async def require_token(request: Request, call_next):  # noqa: ANN202
        if token and request.url.path != "/healthz":
            given = request.headers.get("authorization", "")
            given = given[7:] if given.lower().startswith("bearer ") else ""
            given = given or request.query_params.get("token", "") or request.cookies.get(COOKIE, "")
            if not secrets.compare_digest(given.encode(), token.encode()):
                return error(401, "this server needs its token (Authorization: Bearer TOKEN, or ?token=TOKEN)")
        response = await call_next(request)
        if token and request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError) -> JSONResponse:
        return error(_status(e), str(e))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error(e.status_code, str(e.detail))

    # -- health and metrics ---------------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/readyz")
    def readyz() -> Response:
        ok = ready()
        return JSONResponse({"ready": ok, "streams": len(hub.streams())}, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # -- the API ------------------------------------------------------------------------------------------------
    @app.get("/api/streams")
    def list_streams() -> dict[str, Any]:
        return {"streams": [s.snapshot() for s in hub.streams()], "batcher": batcher.snapshot()}

    @app.get("/api/streams/{name}")
    def one_stream(name: str) -> dict[str, Any]:
        return hub.get(name).snapshot()

    @app.post("/api/streams", status_code=201)
    async def add_stream(request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        spec = StreamSpec.from_mapping(body)
        stream = await anyio.to_thread.run_sync(lambda: hub.add(spec, from_api=True))
        return stream.snapshot()

    @app.delete("/api/streams/{name}")
    def remove_stream(name: str) -> dict[str, Any]:
        if webrtc is not None:
            webrtc.close_stream(name)
        return {"removed": name, "last": hub.remove(name)}

    @app.post("/api/streams/{name}/restart")
    def restart_stream(name: str) -> dict[str, Any]:
        if webrtc is not None:
            webrtc.close_stream(name)
        return hub.restart(name).snapshot()

    @app.patch("/api/streams/{name}")
    async def change_stream(name: str, request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        stream = hub.get(name)
        unknown = sorted(set(body) - {"view"})
        if unknown:
            raise UserError(f"only 'view' can be changed while a stream runs, not {', '.join(unknown)}")
        view = body.get("view")
        if view not in VIEWS or (view != "seg" and view != "overlay" and hub.meta.depth is None):
            raise UserError(f"view '{view}': choose one of {', '.join(VIEWS)}")
        stream.view = view
        return stream.snapshot()

    @app.get("/api/streams/{name}/events")
    async def stream_events(name: str, request: Request) -> StreamingResponse:
        stream = hub.get(name)

        async def events():  # noqa: ANN202
            while not stream.latest.closed and not await request.is_disconnected():
                yield f"data: {json.dumps(_page_stats(stream, batcher))}\n\n"
                await asyncio.sleep(STATS_PERIOD_S)
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    # -- views --------------------------------------------------------------------------------------------------
    @app.get("/streams/{name}/mjpeg")
    async def mjpeg(name: str) -> StreamingResponse:
        latest = hub.get(name).latest

        async def parts():  # noqa: ANN202
            seq = 0
            while not latest.closed:
                n, data = await anyio.to_thread.run_sync(latest.jpeg, seq, 1.0)
                if data is None or n == seq:
                    continue
                seq = n
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                       ).encode() + data + b"\r\n"
        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/streams/{name}/frame.jpg")
    async def frame_jpeg(name: str) -> Response:
        latest = hub.get(name).latest
        n, data = await anyio.to_thread.run_sync(latest.jpeg, 0, 2.0)
        if data is None:
            return error(503, f"stream '{name}' has no frame yet")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store", "X-Frame": str(n)})

    @app.post("/api/streams/{name}/webrtc")
    async def webrtc_offer(name: str, request: Request) -> dict[str, Any]:
        if webrtc is None:
            return error(501, "WebRTC is not available here (install aiortc); use the MJPEG view")
        body = await _json_object(request)
        if not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
            raise UserError("a WebRTC offer needs 'sdp' (text) and 'type': 'offer'")
        return await webrtc.answer(name, hub.get(name).latest, body["sdp"])

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return index_page()

    @app.get("/view/{name}", response_class=HTMLResponse)
    def view(name: str) -> str:
        stream = hub.get(name)
        return stream_page(stream.name, stream.view, VIEWS, webrtc is not None)

    return app


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise UserError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    return body


def _page_stats(stream: Any, batcher: Any) -> dict[str, Any]:
    """What the page shows each half second: FPS, p50/p99 per stage, drops, state."""
    snap = stream.snapshot()
    stages = {k: {"p50": v["p50"], "p99": v["p99"]} for k, v in snap["latency_ms"]["stages"].items()}
    lat = snap["latency_ms"]["capture_to_output"]
    return {"name": stream.name, "state": snap["state"], "error": snap["error"], "view": snap["view"],
            "fps": snap["recent_fps"], "frames_out": snap["frames"]["out"], "dropped": snap["frames"]["dropped"],
            "reconnects": snap["reconnects"], "latency": {"p50": lat["p50"], "p99": lat["p99"]}, "stages": stages,
            "batcher_error": batcher.error}
