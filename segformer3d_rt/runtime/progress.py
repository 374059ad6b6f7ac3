"""How a command shows its progress: the one list of modes and the one rule for "auto"."""
from __future__ import annotations

PROGRESS_MODES = ("auto", "rich", "plain", "none")


def progress_mode(asked: str, console) -> str:
    """auto: a rich live view on a terminal, plain log lines otherwise (CI logs, pipes); others as asked."""
    if asked == "auto":
        return "rich" if console.is_terminal else "plain"
    return asked
