"""Devices and precisions: user names ('auto', 'cuda:1', 'fp16', ...) -> torch objects, and the one table of
precision names and the autocast dtypes they stand for."""
from __future__ import annotations

import contextlib

import torch

from ..errors import UserError

# precision name <-> autocast dtype; None: fp32, no autocast
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_CHOICES = ("auto", *PRECISIONS)  # what a --precision setting may say


def precision_dtype(name: str) -> torch.dtype | None:
    """'fp32' | 'fp16' | 'bf16' -> the autocast dtype (None for fp32); KeyError for other names."""
    return PRECISIONS[name]


def precision_name(dtype: torch.dtype | None) -> str:
    """The inverse of :func:`precision_dtype`."""
    return next(name for name, d in PRECISIONS.items() if d == dtype)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):  # 'cuda:abc', '3': torch's own message is a traceback
        raise UserError(f"unknown device '{name}'; choose auto, cpu, cuda or cuda:N (N a GPU number)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' requested but CUDA is not available (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return dev


def resolve_precision_name(name: str, device: torch.device) -> str:
    """What torch computes in for a precision setting: auto is fp16 autocast on CUDA, fp32 on the CPU."""
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UserError("fp16 needs a CUDA device; use --precision fp32 or bf16 on CPU")
    if name not in PRECISIONS:
        raise UserError(f"unknown precision '{name}'; choose one of {', '.join(PRECISION_CHOICES)}")
    return name


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of :func:`resolve_precision_name` (None means fp32: no autocast)."""
    return precision_dtype(resolve_precision_name(name, device))


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``; nothing for None (fp32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def cuda_index(device: torch.device | str | None) -> int | None:
    """The CUDA device index a run uses: None for non-CUDA devices, ``N`` for 'cuda:N', and for a bare 'cuda'
    torch's current device (0 when CUDA is not initialised). Side streams, events, graph capture, NVDEC
    (PyAV's HWAccel ``device``) and NVENC (h264_nvenc's ``gpu`` option) all take it from here, so that
    ``--device cuda:1`` does not quietly put part of the work on GPU 0."""
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    if dev.index is not None:
        return dev.index
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def explicit_device(device: torch.device | str) -> torch.device:
    """'cuda' -> 'cuda:N' (the index :func:`cuda_index` gives); other devices unchanged. A bare 'cuda' means
    *the calling thread's* current device, which differs between the main thread and the stage threads."""
    dev = torch.device(device)
    return torch.device("cuda", cuda_index(dev)) if dev.type == "cuda" else dev


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Make ``device`` the current CUDA device for the block (calls without a device, such as
    ``torch.cuda.synchronize()``, then target it); nothing for other devices."""
    return torch.cuda.device(device) if torch.device(device).type == "cuda" else contextlib.nullcontext()


_OOM_WORDS = ("out of memory", "can't allocate memory", "failed to allocate", "cannot allocate memory",
              "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's (CPU or CUDA), OpenVINO's and Python's ways of saying the memory asked for cannot be had."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _OOM_WORDS)
