"""Small checks several test files share."""
from __future__ import annotations

import pytest

from segformer3d_rt import cli


def one_error_line(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    """Run the real CLI in-process: exit 2, no traceback, exactly one line on stderr holding every needle."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    return lines[0]
