"""``python -m segformer3d_rt.synthetic --bench`` (render speed) or ``--save DIR`` (preview PNGs)."""
from __future__ import annotations

from .world import main

raise SystemExit(main())
