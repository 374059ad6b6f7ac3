"""A training run on disk: ``last.safetensors`` (the weights, with metadata) and ``last.state.pt`` (everything a
resume needs: weights, optimiser, schedule, scaler, step, RNG, the pose network of video sources)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..model import SegFormer3D, save_checkpoint
from ..runtime.paths import OVERWRITE_FLAG, no_stdout

WEIGHTS = "last.safetensors"
STATE = "last.state.pt"


def resume_path(resume: str) -> Path:
    p = Path(resume)
    if p.is_dir():
        p = p / STATE
    if not p.is_file():
        raise UserError(f"cannot resume: '{p}' not found")
    return p


def check_out(out: Path, resume: str | None, overwrite: bool = False) -> None:
    """Never train over a finished run: --out may hold one only when that is the run being resumed, or when
    asked to replace it."""
    no_stdout(str(out), "a training run (a folder of checkpoints)")
    held = [n for n in (WEIGHTS, STATE) if (out / n).exists()]
    if not held or overwrite:
        return
    if resume and resume_path(resume).parent.resolve() == out.resolve():
        return
    raise UserError(f"'{out}' already holds a run ({held[0]}); give another --out, --resume {out} to continue it, "
                    f"or {OVERWRITE_FLAG} to replace it")


def load_state(resume: str) -> dict[str, Any]:
    # onto the CPU: torch.set_rng_state takes only a CPU ByteTensor (map_location=cuda would move it there);
    # load_state_dict copies weights and optimizer state onto the parameters' device itself
    return torch.load(resume_path(resume), map_location="cpu", weights_only=True)


def save(model: SegFormer3D, opt, sched, scaler, step: int, out: Path, pose: torch.nn.Module | None = None) -> None:
    model.eval()
    save_checkpoint(model, out / WEIGHTS)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "scaler": scaler.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}
    if pose is not None:
        state["pose"] = pose.state_dict()
    tmp = out / (STATE + ".partial")
    torch.save(state, tmp)
    tmp.replace(out / STATE)
