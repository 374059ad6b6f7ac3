"""Files that come with the project: the default weights and the pipeline presets.

Both are looked up relative to the repository checkout for now (``weights/``, ``pipelines/``); this module
is the only place that knows where they are.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_WEIGHTS = REPO_ROOT / "weights" / "segformer3d-rt-b0-roads.safetensors"
PIPELINES_DIR = REPO_ROOT / "pipelines"  # the presets: pipelines/<name>.toml
WEIGHTS_ENV = "SEGFORMER3D_RT_WEIGHTS"  # overrides the bundled weights


def default_weights() -> Path:
    env = os.environ.get(WEIGHTS_ENV)
    path = Path(env) if env else BUNDLED_WEIGHTS
    if not path.is_file():
        raise UserError(f"no --weights given and the bundled weights are missing ({path}); "
                        "pass --weights FILE (any supported checkpoint)")
    return path


def preset_path(name: str) -> Path:
    """The bundled preset file of that name (which may not exist)."""
    return PIPELINES_DIR / f"{name}.toml"


def preset_names() -> list[str]:
    return sorted(f.stem for f in PIPELINES_DIR.glob("*.toml"))
