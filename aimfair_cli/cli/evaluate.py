"""`aimfair eval`: per-cell accuracy, ACC, WST, EO (mean and worst-case forms) and STD of one or more checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import layout
from ..config import resolve
from ..metrics import CELLS, DEGENERATE_MARK, MSG_DEGENERATE_NOTE, STD_KIND, cell_key
from . import console
from .options import ConfigOpt, DeviceOpt, JsonOpt, VerboseOpt, WorkersOpt

DEFAULTS = dict(model=[str(layout.FINETUNE)], data=layout.TEST, batch_size=256, workers=2, device="auto",
                predictions=None)
HEADLINE_COLUMNS = (("acc", "ACC"), ("wst", "WST"), ("eo", "EO"), ("eo_worst", "EO worst"), ("std", "STD"))
AGGREGATE_NOTE = (f"std: {STD_KIND} standard deviation over runs (ddof=1). WST in the mean row is the mean of the "
                  "per-run WST; 'min of mean cells' is the lowest mean cell accuracy (how the paper aggregates).")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _pm(d: dict[str, float], key: str = "mean", spread: str = "std") -> str:
    return f"{100 * d[key]:.2f} ± {100 * d[spread]:.2f}"


def render_table(runs: list[tuple[Path, Any]], agg: dict[str, Any], data: Path):
    """A rich table: one row per checkpoint; with several, mean ± std rows and WST both ways (labelled)."""
    from rich.table import Table

    first = runs[0][1]
    table = Table(title=f"{data} (values in %)", title_justify="left")
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
    return table


def evaluate(
    model: Annotated[
        Optional[list[str]],
        typer.Option("--model", "-m", help="Checkpoint (.safetensors); repeat it or pass a quoted glob such as "
                     f"'runs/seed*/finetune.safetensors' to aggregate several. [default: {layout.FINETUNE}]"),
    ] = None,
    data: Annotated[
        Optional[Path], typer.Option(help=f"Test manifest with target and protected on every row. [default: {layout.TEST}]",
                                     dir_okay=False)
    ] = None,
    predictions: Annotated[
        Optional[Path], typer.Option(help="Write one CSV row per image: file_name,target,protected,score,pred "
                                     "(one --model only).", dir_okay=False)
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per batch. [default: 256]")] = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Evaluate checkpoints on a real test manifest: per-cell accuracy and counts, ACC, WST, EO, worst-case EO and
    STD (percent in the table, fractions in --json). With several checkpoints also mean ± sample std over runs."""
    from ..stages.evaluate import evaluate_many

    opts = resolve("eval", dict(model=model, data=data, predictions=predictions, batch_size=batch_size,
                                workers=workers, device=device), DEFAULTS, config_file=config)
    models = opts["model"] if isinstance(opts["model"], list) else [opts["model"]]
    console.setup_logging(verbose)
    runs, agg = evaluate_many(models, Path(opts["data"]), batch_size=int(opts["batch_size"]), workers=int(opts["workers"]),
                              device=str(opts["device"]), predictions=opts["predictions"],
                              progress=console.RichProgress())
    if json_:
        if len(runs) == 1:
            payload: dict[str, Any] = runs[0][1].to_dict()
        else:
            payload = {"runs": [{"model": str(p), **m.to_dict()} for p, m in runs], "aggregate": agg}
        console.out.print_json(json.dumps(payload))
    else:
        console.print_wide(render_table(runs, agg, Path(opts["data"])))
        if any(m.degenerate for _, m in runs):
            console.out.print(MSG_DEGENERATE_NOTE, markup=False)
        if len(runs) > 1:
            console.out.print(AGGREGATE_NOTE, markup=False)
