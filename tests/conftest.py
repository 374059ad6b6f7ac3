from __future__ import annotations

import os
from pathlib import Path

import pytest

# ../shared beside the checkout; SEGFORMER3D_SHARED elsewhere (scripts/gpu_check.sh points it at the clips it carries)
SHARED = Path(os.environ.get("SEGFORMER3D_SHARED") or Path(__file__).resolve().parents[2] / "shared")
SHARED_DATA = SHARED / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA
