"""WebRTC views (aiortc): each peer gets a video track that reads its stream's LatestFrame slot, never a queue,
so a slow viewer skips frames instead of falling behind, and a viewer costs one encode, no inference.

aiortc negotiates a codec Chromium decodes (VP8 or H.264). It is optional: without it the page uses MJPEG.
"""
from __future__ import annotations

import asyncio
import logging
from fractions import Fraction
from typing import Any

import numpy as np

from .slots import LatestFrame

log = logging.getLogger(__name__)
MAX_PEERS = 64  # each peer encodes on the CPU: bounded like every other user-sized request


def available() -> str | None:
    """None when aiortc imports, else why not (one line)."""
    try:
        import aiortc  # noqa: F401
    except ImportError as e:
        return f"WebRTC unavailable ({e}); the viewer uses MJPEG"
    return None


class Peers:
    """The server's peer connections, by stream; ``answer`` takes a browser's offer."""

    def __init__(self, fps: float = 30.0) -> None:
        self.fps = fps
        self._peers: dict[str, set[Any]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, known from the first offer

    def __len__(self) -> int:
        return sum(len(p) for p in self._peers.values())

    async def answer(self, name: str, latest: LatestFrame, sdp: str) -> dict[str, str]:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from ..errors import UserError

        self.loop = asyncio.get_running_loop()
        if len(self) >= MAX_PEERS:
            raise UserError(f"at most {MAX_PEERS} WebRTC viewers")
        pc = RTCPeerConnection()
        self._peers.setdefault(name, set()).add(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._close(name, pc)

        pc.addTrack(latest_track(latest, self.fps))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:  # noqa: BLE001  -- a malformed offer is the client's
            await self._close(name, pc)
            raise UserError(f"bad WebRTC offer: {e}") from None
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def _close(self, name: str, pc: Any) -> None:
        self._peers.get(name, set()).discard(pc)
        await pc.close()

    def close_stream(self, name: str) -> None:
        """The stream is going away: its peers are closed (from a worker thread of the server)."""
        peers = self._peers.pop(name, set())
        for pc in peers:
            if self.loop is not None:
                asyncio.run_coroutine_threadsafe(pc.close(), self.loop)

    async def close_all(self) -> None:
        for name in list(self._peers):
            for pc in list(self._peers.pop(name, ())):
                await pc.close()


def latest_track(latest: LatestFrame, fps: float) -> Any:
    """A video track sending the newest rendered frame at ``fps`` (the last one again if nothing is newer)."""
    import av
    from aiortc import VideoStreamTrack

    class LatestTrack(VideoStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self._seq = 0
            self._frame: av.VideoFrame | None = None
            self._t0: float | None = None
            self._n = 0

        async def recv(self) -> av.VideoFrame:
            loop = asyncio.get_running_loop()
            if self._t0 is None:
                self._t0 = loop.time()
            self._n += 1
            wait = self._t0 + self._n / fps - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            seq, image, _ = latest.wait_newer(self._seq, 0.0)  # never waits: what is there now
            if image is not None and (seq != self._seq or self._frame is None):
                self._seq = seq
                h, w = image.shape[:2]
                image = image[: h - h % 2, : w - w % 2]  # 4:2:0 encoders need even sides
                self._frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame = self._frame or av.VideoFrame.from_ndarray(np.zeros((240, 320, 3), np.uint8), format="rgb24")
            out = frame.reformat()  # a fresh frame object: aiortc sets pts on what it is given
            out.pts = int(self._n * 90000 / fps)
            out.time_base = Fraction(1, 90000)
            return out

    return LatestTrack()
