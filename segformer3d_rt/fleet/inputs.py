"""INPUT... -> the videos of a fleet, in order, each with its output name; what cannot be a video is kept with its
reason (listed as failed, the rest carry on)."""
from __future__ import annotations

import csv
import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..runtime.media_kinds import ARCHIVE_VIDEO_SUFFIXES

MANIFEST_SUFFIXES = (".txt", ".csv", ".lst")


@dataclass(frozen=True)
class Video:
    source: str  # as the user gave it (absolute when it came from a manifest or folder)
    output: str  # the file name in OUTDIR
    problem: str | None = None  # why it cannot be processed (missing, unreadable): listed as failed


def expand(inputs: list[str]) -> list[Video]:
    """Files, folders (their videos, sorted), globs and manifests, in the order given, each video once."""
    paths: list[tuple[str, str | None]] = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in ARCHIVE_VIDEO_SUFFIXES and f.is_file())
            paths += [(f, None) for f in found] or [(text, "a folder with no videos")]
        elif p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            paths += [(entry, None) for entry in _manifest(p)]
        elif any(c in text for c in "*?[") and not p.exists():
            found = sorted(glob.glob(text, recursive=True))
            paths += [(f, None) for f in found] or [(text, "no file matches this pattern")]
        else:
            paths.append((text, None))
    seen: set[str] = set()
    unique = []
    for path, problem in paths:
        key = str(Path(path).resolve()) if problem is None else path
        if key not in seen:
            seen.add(key)
            unique.append((path, problem))
    return _named(unique)


def _manifest(path: Path) -> list[str]:
    """One path a line (# comments), or a CSV with a 'path' column (else its first); relative to the manifest."""
    text = path.read_text(errors="replace")
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            return []
        header = [h.strip().lower() for h in rows[0]]
        col = header.index("path") if "path" in header else 0
        body = rows[1:] if "path" in header else rows
        entries = [r[col].strip() for r in body if len(r) > col and r[col].strip()]
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [e if Path(e).is_absolute() else str(path.parent / e) for e in entries]


def _named(paths: list[tuple[str, str | None]]) -> list[Video]:
    """Output names: the video's stem + .mp4, or stem-<hash of its path> where two stems collide."""
    stems: dict[str, int] = {}
    for path, _ in paths:
        stems[Path(path).stem] = stems.get(Path(path).stem, 0) + 1
    out = []
    for path, problem in paths:
        stem = Path(path).stem or "video"
        if stems[stem] > 1:
            stem += "-" + hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]
        if problem is None:
            problem = _problem(path)
        out.append(Video(path, f"{stem}.mp4", problem))
    return out


def _problem(path: str) -> str | None:
    p = Path(path)
    if not p.exists():
        return "no such file"
    if p.is_dir():
        return "a folder, not a video"
    try:
        with p.open("rb"):
            pass
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    return None
