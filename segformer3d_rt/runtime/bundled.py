"""Files that come with the project: the default weights and the pipeline presets.

This module is the only place that knows where they are. In the repository they are the top-level folders
``weights/`` and ``pipelines/``; pyproject.toml maps them into the package as ``segformer3d_rt.bundled_weights``
and ``segformer3d_rt.presets`` (package data), so they are found through importlib.resources the same way in an
editable install (setuptools' finder points those packages at the repository folders) and in a wheel install
(the files sit inside the installed package).
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..errors import UserError

WEIGHTS_PACKAGE = "segformer3d_rt.bundled_weights"  # weights/ in the repository
PRESETS_PACKAGE = "segformer3d_rt.presets"  # pipelines/ in the repository: <name>.toml
WEIGHTS_FILE = "segformer3d-rt-b0-roads.safetensors"
WEIGHTS_ENV = "SEGFORMER3D_RT_WEIGHTS"  # overrides the bundled weights


def _package_dir(package: str) -> Path | None:
    """The folder holding a data package's files; None when the package is not installed."""
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        return None
    # installs on a file system (editable or wheel) give a real folder; a zipped install is not supported
    return root if isinstance(root, Path) else Path(str(root))


def bundled_weights() -> Path | None:
    """Where the bundled weights are (the file may be missing); None when the data package is not installed."""
    folder = _package_dir(WEIGHTS_PACKAGE)
    return folder / WEIGHTS_FILE if folder is not None else None


def default_weights() -> Path:
    """$SEGFORMER3D_RT_WEIGHTS when set, else the bundled weights; a UserError when the file is missing."""
    env = os.environ.get(WEIGHTS_ENV)
    path = Path(env) if env else bundled_weights()
    if path is None or not path.is_file():
        where = path if path is not None else f"package {WEIGHTS_PACKAGE} not installed"
        raise UserError(f"no --weights given and the bundled weights are missing ({where}); "
                        "pass --weights FILE (any supported checkpoint)")
    return path


def presets_dir() -> Path | None:
    return _package_dir(PRESETS_PACKAGE)


def preset_path(name: str) -> Path | None:
    """The bundled preset file of that name (which may not exist); None when the presets are not installed."""
    folder = presets_dir()
    return folder / f"{name}.toml" if folder is not None else None


def preset_names() -> list[str]:
    folder = presets_dir()
    return sorted(f.stem for f in folder.glob("*.toml")) if folder is not None else []
