"""`aimfair demo`: the method on the offline benchmark, with baselines and the paper's studies, in one command."""

from __future__ import annotations

import json

from ..experiments.demo import DemoConfig, run_demo
from ..experiments.report import (distinguishable_text, paired_rows, paired_vs_reference, reference_words, study_json,
                                  summary_rows)
from . import console
from .options import command


def _table(title: str, rows: list[dict[str, str]]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for row in rows:
        table.add_row(*row.values())
    return table


def print_result(result, *, seeds: int, json_out: bool) -> None:
    """The tables of every study (or one JSON object) on stdout; shared by `aimfair demo` and `aimfair study`."""
    if json_out:
        first = result.first_runs  # the JSON key "strategies" predates the word runs: the format stays
        console.out.print_json(json.dumps({"out": str(result.out), "report": str(result.report),
                                           "seconds": round(result.seconds, 1), "plan": result.plan,
                                           "strategies": {s.name: s.aggregate() for s in first},
                                           "paired_vs_full": paired_vs_reference(first),
                                           **study_json(result.studies, result.results)}))
        return
    for study in result.studies:
        runs = result.results[study.name]
        console.print_wide(_table(f"{study.title}: real test set, % (mean ± std over {seeds} seed(s))",
                                  summary_rows(runs, labels=False)))
        prows = paired_rows(runs, labels=False, reference=study.reference)
        if prows:
            console.print_wide(_table(f"Paired against {reference_words(study.reference)}, percentage points: mean "
                                      "diff [95 % CI] wins/seeds (higher ACC/WST, lower EO/STD win)", prows))
        console.out.print(distinguishable_text(runs, study.reference), markup=False)
    for line in result.mask_summary:
        console.out.print(line)
    console.out.print(f"report: {result.report}  ({result.seconds / 60:.1f} min)")


@command("demo", DemoConfig)
def demo(cfg: DemoConfig, *, json_out: bool) -> None:
    """Run data -> prompts -> synth -> pretrain -> mask -> finetune (AIM-Fair and baselines) -> eval on the
    built-in offline benchmark, print one table per study and write report.md with figures and commands.sh. Before
    it starts it says how many trainings it will run and about how long they take; finished steps are reused on
    rerun. --study picks the paper's experiments (Tab. 3-6, Fig. 5)."""
    result = run_demo(cfg, progress=console.make_progress(),
                      announce=lambda text: console.err.print(f"aimfair demo: {text}", markup=False))
    print_result(result, seeds=result.config.seeds, json_out=json_out)
