"""`aimfair demo`: the whole method on the offline benchmark, with baselines, in one command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import resolve
from ..stages.demo import (PRESETS, DemoConfig, distinguishable_text, paired_rows, paired_vs_reference, run_demo,
                           summary_rows)
from . import console
from .options import ConfigOpt, DeviceOpt, JsonOpt, WorkersOpt

_D, _Q = PRESETS["default"], PRESETS["quick"]


def demo(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Demo folder (reused on rerun). [default: aimfair-demo]",
                                                file_okay=False)] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Training seeds; the table shows mean ± std over them. [default: 1]")] = None,
    quick: Annotated[bool, typer.Option("--quick", help=f"A tiny run (~1 minute): {_Q['n_train']} images at {_Q['size']} px, "
                                        "1 fine-tuning epoch, freeze baseline on fc only.")] = False,
    n_train: Annotated[Optional[int], typer.Option("--n-train", help=f"Real training images. [default: {_D['n_train']}, quick {_Q['n_train']}]")] = None,
    size: Annotated[Optional[int], typer.Option(help=f"Image side in pixels. [default: {_D['size']}, quick {_Q['size']}]")] = None,
    pretrain_epochs: Annotated[Optional[int], typer.Option("--pretrain-epochs", help=f"[default: {_D['pretrain_epochs']}, quick {_Q['pretrain_epochs']}]")] = None,
    finetune_epochs: Annotated[Optional[int], typer.Option("--finetune-epochs", help=f"[default: {_D['finetune_epochs']}, quick {_Q['finetune_epochs']}]")] = None,
    finetune_lr: Annotated[Optional[float], typer.Option("--finetune-lr", help=f"[default: {_D['finetune_lr']}]")] = None,
    topk: Annotated[Optional[str], typer.Option(help="k for the mask, tensors or percent. [default: 55]")] = None,
    freeze_blocks: Annotated[
        Optional[str],
        typer.Option("--freeze-blocks", help="Comma-separated blocks tried for the best single-block freeze baseline "
                     "(stem, layer1..layer4, fc). [default: layer1,fc; quick: fc]"),
    ] = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run data -> prompts -> synth -> pretrain -> mask -> finetune (AIM-Fair and baselines) -> eval on the
    built-in offline benchmark, print one comparison table and write report.md with plots. Finished steps are
    reused on rerun."""
    defaults = {k: v for k, v in DemoConfig().__dict__.items() if k not in ("quick",)}
    opts = resolve("demo", dict(out=out, seeds=seeds, n_train=n_train, size=size, pretrain_epochs=pretrain_epochs,
                                finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, topk=topk, device=device,
                                workers=workers, freeze_blocks=freeze_blocks), defaults, config_file=config)
    opts["out"] = Path(opts["out"])
    if isinstance(opts["freeze_blocks"], str):
        opts["freeze_blocks"] = tuple(b.strip() for b in opts["freeze_blocks"].split(",") if b.strip())
    console.setup_logging()
    result = run_demo(DemoConfig(quick=quick, **opts), progress=console.RichProgress())
    rows = summary_rows(result.strategies, labels=False)
    if json_:
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
