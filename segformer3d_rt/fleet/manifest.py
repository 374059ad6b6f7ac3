"""OUTDIR/fleet-manifest.json: every video of the fleet, done / failed / not done and why, rewritten (through a
temporary file, renamed) after every change, so that an interrupted fleet loses nothing and the next run continues.

"Done" is checked, not believed: the output must exist with the size the worker recorded and hold as many video
frames as its statistics say it wrote (its packets counted, nothing decoded).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import av

from ..errors import UserError

NAME = "fleet-manifest.json"
SUMMARY = "fleet-summary.json"
VERSION = 1


def video_frames(path: Path) -> int | None:
    """The number of video packets in ``path`` (one per frame for the codecs `run` writes), None if unreadable."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return None
            return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    except (av.FFmpegError, OSError):
        return None


class Manifest:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / NAME
        self._lock = threading.Lock()
        self.videos: dict[str, dict[str, Any]] = {}  # by output name
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                self.videos = {v["output"]: v for v in data["videos"]}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise UserError(f"'{self.path}' is not a fleet manifest ({e}); move it away to start afresh") from None

    def is_done(self, output: str, source: str) -> bool:
        """Recorded as done for this source, and the output checks out against its statistics."""
        row = self.videos.get(output)
        if not row or row.get("status") != "done" or row.get("source") != source:
            return False
        out = self.out_dir / output
        if not out.is_file() or out.stat().st_size != row.get("bytes"):
            return False
        return video_frames(out) == row.get("frames_out")

    def record(self, output: str, **row: Any) -> None:
        with self._lock:
            old = self.videos.get(output, {})
            attempts = old.get("attempts", 0) + (1 if row.get("status") in ("done", "failed", "not done") else 0)
            self.videos[output] = {"output": output, **row, "attempts": attempts}
            self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(f"{NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": VERSION, "videos": list(self.videos.values())}, indent=1))
        tmp.replace(self.path)
