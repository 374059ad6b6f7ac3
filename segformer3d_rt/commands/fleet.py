"""`fleet`: an archive of videos through `run`'s pipeline on a Ray cluster or in this process, resumable (the
work is in ``fleet/``). Exit 0 when every video is done, 1 when some failed (each named in the summary), 130
after Ctrl-C / SIGTERM (the next run continues)."""
from __future__ import annotations

import logging

from ..errors import UserError
from ..fleet.config import RUN_SETTINGS, FleetConfig, fleet_run_template
from ..runtime.stop import StopRequest

__all__ = ["RUN_SETTINGS", "FleetConfig", "fleet_run_template", "run_fleet"]

log = logging.getLogger(__name__)


class NotAllDone(UserError):
    """Some videos failed or were not done: each is named in the summary."""

    exit_code = 1


def run_fleet(cfg: FleetConfig) -> int:
    from ..fleet.progress import FleetView
    from ..fleet.runner import Fleet

    cfg.check()
    fleet = Fleet(cfg, FleetView(cfg.progress) if cfg.progress != "none" else None)

    def first() -> None:
        log.warning("fleet: stopping: the videos in hand finish (Ctrl-C again: stop them too)")

    def again() -> None:
        log.warning("fleet: stopping the videos in hand; they are left not done")

    with StopRequest(first=first, second=again) as stop:
        summary = fleet.run(stop)
    t = summary["totals"]
    print(f"fleet: {t['done']} of {t['videos']} video(s) done ({t['done_before']} before this run), {t['failed']} "
          f"failed, {t['not_done']} not done; {t['frames_out']} frames in {t['seconds']:.1f} s; summary in "
          f"{fleet.out_dir / 'fleet-summary.json'}", flush=True)
    for f in summary["failures"]:
        print(f"fleet: failed: {f['error']}", flush=True)
    if stop.count:
        return 130
    if t["failed"] or t["not_done"]:
        raise NotAllDone(f"{t['failed'] + t['not_done']} of {t['videos']} video(s) not done (see the summary)")
    return 0
