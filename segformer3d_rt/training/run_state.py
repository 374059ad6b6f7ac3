"""A training run on disk: ``last.safetensors`` (the weights, with metadata) and ``last.state.pt`` (everything a
resume needs: weights, optimiser, schedule, scaler, step, RNG, the pose network of video sources)."""
from __future__ import annotations

import json
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


# settings that may change between a run and its resumption: where and how fast it runs, how it reports
RESUMABLE_CHANGES = frozenset({"resume", "init", "init_note", "out", "threads", "workers", "device", "progress",
                               "log_every", "save_every", "overwrite", "steps"})  # steps: a run may be extended


def check_same_settings(settings: dict[str, Any], resume: str) -> None:
    """A resumed run continues the same training: refused, naming the first setting that differs from the run's
    train_config.json, before any work (a different --data otherwise fails deep in the optimiser's state)."""
    saved_file = resume_path(resume).parent / "train_config.json"
    try:
        saved = json.loads(saved_file.read_text())
    except FileNotFoundError:
        return  # an older run without it: the state's own checks still apply
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read '{saved_file}' to check the resumed settings: {e}") from None
    for key, value in settings.items():
        if key in RESUMABLE_CHANGES or key not in saved:
            continue
        was = saved[key]
        if json.loads(json.dumps(value)) != was:  # tuples compare as the lists JSON keeps
            raise UserError(f"--resume {resume}: that run was trained with {key} = {json.dumps(was)}, not "
                            f"{json.dumps(value)}; give the run's own settings (its train_config.json)")
