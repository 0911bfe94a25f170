"""`aimfair data demo`: render the offline benchmark's real-style faces and their train/val/test manifests.

Options are the fields of `DemoDataConfig` (flags > the `data_demo` section of ./aimfair.yaml or --config > defaults).
"""

from __future__ import annotations

from dataclasses import asdict

from ..data.demo import STAGE, DemoDataConfig, make_demo_dataset
from .console import make_progress, out
from .data_real import report
from .options import command


@command(STAGE, DemoDataConfig)
def demo(cfg: DemoDataConfig, *, json_out: bool) -> None:
    """Render photo-style faces (target Smiling, protected Male) with a biased train split and CelebA-like val/test."""
    result = make_demo_dataset(progress=make_progress(), **asdict(cfg))
    report(result, "Smiling", "Male", json_out)
    if not json_out:
        out.print(f"rendered {result.images_per_s:.0f} images/s", markup=False)
