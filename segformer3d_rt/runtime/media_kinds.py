"""What kind of media a path names, by its suffix: the one home of these lists."""
from __future__ import annotations

# video containers the project reads and writes (PyAV opens more; these are the ones a folder is scanned for)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
