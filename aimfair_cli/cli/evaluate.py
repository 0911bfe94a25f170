"""`aimfair eval`: per-cell accuracy, ACC, WST, EO (mean and worst-case forms) and STD of one or more checkpoints,
optionally paired against reference checkpoints of another strategy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fairness.metrics import CELLS, DEGENERATE_MARK, MSG_DEGENERATE_NOTE, PAIRED, STD_KIND, cell_key, format_paired
from ..stages.evaluate import EvalConfig
from . import console
from .options import command

HEADLINE_COLUMNS = (("acc", "ACC"), ("wst", "WST"), ("eo", "EO"), ("eo_worst", "EO worst"), ("std", "STD"))
AGGREGATE_NOTE = (f"std: {STD_KIND} standard deviation over runs (ddof=1). WST and STD in the mean row are the mean "
                  "of the per-run values; 'min of mean cells' is the lowest mean cell accuracy and 'std of mean cells' "
                  "the population std of the mean cell accuracies (how the paper aggregates).")
PAIRED_NOTE = ("paired: model run i against reference run i (same seed), in percentage points. 95 % CI: Student t "
               "over runs, n-1 degrees of freedom ('—' with one run). wins: runs where the model beat the reference "
               "(higher ACC/WST, lower EO/STD; ties are not wins).")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _pm(d: dict[str, float], key: str = "mean", spread: str = "std") -> str:
    return f"{100 * d[key]:.2f} ± {100 * d[spread]:.2f}"


def render_table(runs: list[tuple[Path, Any]], agg: dict[str, Any], data: Path, title: str = ""):
    """A rich table: one row per checkpoint; with several, mean ± std rows and WST and STD both ways (labelled)."""
    from rich.table import Table

    first = runs[0][1]
    table = Table(title=f"{title}{data} (values in %)", title_justify="left")
    table.add_column("model")
    for y, s in CELLS:
        table.add_column(f"y={y} s={s}\nn={first.cells[(y, s)][0]}", justify="right")
    for _, label in HEADLINE_COLUMNS:
        table.add_column(label, justify="right")
    for path, m in runs:
        name = f"{path} {DEGENERATE_MARK}" if m.degenerate else str(path)
        table.add_row(name, *(_pct(m.cell_acc(*c)) for c in CELLS), *(_pct(getattr(m, k)) for k, _ in HEADLINE_COLUMNS))
    if len(runs) > 1:
        table.add_section()
        cells = [_pm(agg["cells"][cell_key(*c)], "acc", "acc_std") for c in CELLS]
        heads = [_pm(agg["wst_mean_of_runs" if k == "wst" else k]) for k, _ in HEADLINE_COLUMNS]
        table.add_row(f"mean ± std ({len(runs)} runs)", *cells, *heads)
        table.add_row("WST: min of mean cells", *[""] * len(CELLS), "", _pct(agg["wst_of_mean_cells"]), "", "", "")
        table.add_row("STD: std of mean cells", *[""] * len(CELLS), "", "", "", "", _pct(agg["std_of_mean_cells"]))
    return table


def render_paired(paired: dict[str, Any]):
    """The paired section: per metric the mean difference model − reference, its 95 % CI and the wins."""
    from rich.table import Table

    n = paired["acc"]["n"]
    table = Table(title=f"paired: model − reference over {n} run(s) (percentage points)", title_justify="left")
    for col in ("metric", "better", "mean diff", "95 % CI", "wins"):
        table.add_column(col, justify="left" if col in ("metric", "better") else "right")
    for key, better in PAIRED:
        text = format_paired(paired[key])
        table.add_row(key.upper(), "higher" if better > 0 else "lower", text["diff"], text["ci95"], text["wins"])
    return table


@command("eval", EvalConfig)
def evaluate(cfg: EvalConfig, *, json_out: bool) -> None:
    """Evaluate checkpoints on a real test manifest: per-cell accuracy and counts, ACC, WST, EO, worst-case EO and
    STD (percent in the table, fractions in --json). With several checkpoints also mean ± sample std over runs;
    with --reference also paired differences against the reference runs."""
    from ..stages.evaluate import run_eval

    result = run_eval(cfg, progress=console.make_progress())
    if json_out:
        console.out.print_json(json.dumps(result.to_dict()))
        return
    cmp = result.comparison
    if cmp is not None:
        console.print_wide(render_table(cmp.runs, cmp.aggregate, cfg.data, title="model: "))
        console.print_wide(render_table(cmp.reference_runs, cmp.reference_aggregate, cfg.data, title="reference: "))
        console.print_wide(render_paired(cmp.paired))
        console.out.print(PAIRED_NOTE, markup=False)
        if any(m.degenerate for _, m in cmp.runs + cmp.reference_runs):
            console.out.print(MSG_DEGENERATE_NOTE, markup=False)
        if len(cmp.runs) > 1:
            console.out.print(AGGREGATE_NOTE, markup=False)
        return
    console.print_wide(render_table(result.runs, result.aggregate, cfg.data))
    if any(m.degenerate for _, m in result.runs):
        console.out.print(MSG_DEGENERATE_NOTE, markup=False)
    if len(result.runs) > 1:
        console.out.print(AGGREGATE_NOTE, markup=False)
