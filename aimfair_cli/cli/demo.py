"""`aimfair demo`: the whole method on the offline benchmark, with baselines, in one command."""

from __future__ import annotations

import json

from ..stages.demo import DemoConfig, distinguishable_text, paired_rows, paired_vs_reference, run_demo, summary_rows
from . import console
from .options import command

@command("demo", DemoConfig)
def demo(cfg: DemoConfig, *, json_out: bool) -> None:
    """Run data -> prompts -> synth -> pretrain -> mask -> finetune (AIM-Fair and baselines) -> eval on the
    built-in offline benchmark, print one comparison table and write report.md with plots. Finished steps are
    reused on rerun."""
    result = run_demo(cfg, progress=console.make_progress())
    rows = summary_rows(result.strategies, labels=False)
    if json_out:
        console.out.print_json(json.dumps({"out": str(result.out), "report": str(result.report),
                                           "seconds": round(result.seconds, 1),
                                           "strategies": {s.name: s.aggregate() for s in result.strategies},
                                           "paired_vs_full": paired_vs_reference(result.strategies)}))
        return
    from rich.table import Table

    table = Table(title=f"Real test set, % (mean ± std over {result.config.seeds} seed(s))")
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for row in rows:
        table.add_row(*row.values())
    console.print_wide(table)
    prows = paired_rows(result.strategies, labels=False)
    paired = Table(title="Paired against full fine-tuning, percentage points: mean diff [95 % CI] wins/seeds "
                         "(higher ACC/WST, lower EO/STD win)")
    for col in prows[0]:
        paired.add_column(col, justify="left" if col == "strategy" else "right")
    for row in prows:
        paired.add_row(*row.values())
    console.print_wide(paired)
    console.out.print(distinguishable_text(result.strategies), markup=False)
    for line in result.mask_summary:
        console.out.print(line)
    console.out.print(f"report: {result.report}  ({result.seconds / 60:.1f} min)")
