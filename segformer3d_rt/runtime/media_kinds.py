"""What kind of media a path names, by its suffix: the one home of these lists."""
from __future__ import annotations

# video containers the project reads and writes (PyAV opens more; these are the ones a folder is scanned for)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
# what a folder of an archive (`fleet`) is scanned for: the containers above and other common camera formats
ARCHIVE_VIDEO_SUFFIXES = (*VIDEO_SUFFIXES, ".avi", ".webm", ".ts", ".mts", ".m2ts")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")  # a one-frame picture output
GIF_SUFFIX = ".gif"


def output_kind(path) -> str:
    """What an output path asks for: "video", "picture", "gif", "folder" (no suffix), "stdout" ("-": a video
    streamed to standard output) or "unknown"."""
    from pathlib import Path

    if str(path) == "-":
        return "stdout"
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in PICTURE_SUFFIXES:
        return "picture"
    if suffix == GIF_SUFFIX:
        return "gif"
    return "folder" if not suffix else "unknown"
