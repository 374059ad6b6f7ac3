"""`fleet`: an archive of videos through `run`'s pipeline on a Ray cluster (or in this process), resumable.

    inputs.py    INPUT... (files, folders, globs, manifests) -> the videos, and the ones that cannot be read
    manifest.py  OUTDIR/fleet-manifest.json: each video done / failed / not done, and why; what "done" is checked by
    worker.py    VideoWorker: one compiled network, one video at a time through `run`'s own session
    runner.py    the plan: one task per video over the workers (Ray actors, or one worker here), retries, Ctrl-C,
                 progress, the summary
    config.py    FleetConfig (the fleet's settings and the RunConfig every video shares)

Only small rows (each video's statistics) travel back from a worker; the videos are read and written by the
workers themselves (OUTDIR must be where every worker can write: a shared filesystem on a real cluster).
"""
