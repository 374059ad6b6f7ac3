"""This project's .safetensors: our names already, the metadata in the header under ``META_KEY``."""
from __future__ import annotations

from ...errors import CheckpointError
from ..metadata import ModelMeta
from .common import Source, StateDict

NAME = "segformer3d-rt"
META_KEY = "segformer3d_rt"


def header(meta: ModelMeta) -> dict[str, str]:
    """The safetensors metadata that save_checkpoint writes and detect() recognises."""
    return {META_KEY: meta.to_json(), "format": NAME}


def detect(src: Source) -> bool:
    return META_KEY in src.header


def filter(sd: StateDict) -> StateDict:  # noqa: A001 (the format interface's name)
    return sd


def meta(sd: StateDict, src: Source) -> ModelMeta:
    try:
        return ModelMeta.from_json(src.header[META_KEY])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"'{src.weights}': its segformer3d-rt metadata is refused: {e}") from None


def encoder_only(sd: StateDict) -> bool:
    return False
