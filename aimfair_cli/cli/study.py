"""`aimfair study`: the paper's studies on an existing run folder (real manifests and a synthetic pool)."""

from __future__ import annotations

from ..experiments.study import StudyConfig, run_study
from . import console
from .demo import print_result
from .options import command


@command("study", StudyConfig)
def study(cfg: StudyConfig, *, json_out: bool) -> None:
    """Run the paper's studies (listed under --study) on RUN's data/ and synth/ with the paper's training sizes, over
    several seeds, into RUN/studies: one table per study with paired 95 % intervals against full fine-tuning,
    report.md with figures, and commands.sh. Says how many trainings it will run and about how long before it
    starts; finished steps are reused on rerun."""
    result = run_study(cfg, progress=console.make_progress(),
                       announce=lambda text: console.err.print(f"aimfair study: {text}", markup=False))
    print_result(result, seeds=cfg.seeds, json_out=json_out)
