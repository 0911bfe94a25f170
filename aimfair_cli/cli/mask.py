"""`aimfair mask`: choose the parameter tensors to fine-tune (Selective Mask Generation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import layout
from ..config import build, resolve
from ..stages.mask import MaskConfig, run_mask
from . import console
from .options import BatchSizeOpt, ConfigOpt, CropScaleOpt, DeviceOpt, JsonOpt, ModelOpt, SeedOpt, WorkersOpt


def mask(
    model: ModelOpt = None,
    real: Annotated[Optional[Path], typer.Option(help=f"Biased real training manifest. [default: {layout.TRAIN}]")] = None,
    synth: Annotated[
        Optional[Path], typer.Option(help=f"Synthetic manifest from `aimfair synth`. [default: {layout.SYNTH_MANIFEST}]")
    ] = None,
    topk: Annotated[
        Optional[str],
        typer.Option(help="k, in tensors (55) or as a share of all tensors (88%). The paper's best is 55 of 62. [default: 55]"),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help=f"Mask file. [default: {layout.MASK}]")] = None,
    score: Annotated[
        Optional[str], typer.Option(help="absdiff (mean |Δg|, the paper's) or cosine (1 − cos, Tab. 4). [default: absdiff]")
    ] = None,
    bias_ratio: Annotated[
        Optional[str],
        typer.Option(
            "--bias-ratio",
            help="Bias of the synthetic-biased set, minority:majority (1:9), or auto: estimated from the biased "
            "model's error rate on the real data and its per-group accuracy on balanced synthetic data. [default: 1:9]",
        ),
    ] = None,
    n_synth: Annotated[
        Optional[int], typer.Option("--n-synth", help="Images in each synthetic set. [default: as many as the real set]")
    ] = None,
    max_samples: Annotated[
        Optional[int], typer.Option("--max-samples", help="Cap the images per set (a cheaper, approximate mask).")
    ] = None,
    batch_size: BatchSizeOpt = None,
    crop_scale: CropScaleOpt = None,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Also draw Δ1 against Δ2 for every tensor, with both top-k "
                                     "cut-offs and the selection, to this PNG file.")
    ] = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Compute mean gradients on real-biased, synthetic-biased and synthetic-balanced data and keep the k
    tensors least sensitive to the domain gap that are also among the k most sensitive to the bias."""
    defaults = dict(MaskConfig(model=layout.PRETRAIN, real=layout.TRAIN, synth=layout.SYNTH_MANIFEST, out=layout.MASK).__dict__)
    opts = resolve("mask", dict(model=model, real=real, synth=synth, topk=topk, out=out, score=score,
                                bias_ratio=bias_ratio, n_synth=n_synth, max_samples=max_samples,
                                batch_size=batch_size, crop_scale=crop_scale, plot=plot, workers=workers,
                                device=device, seed=seed),
                   defaults, config_file=config)
    cfg = build(MaskConfig, opts)
    console.setup_logging()
    result = run_mask(cfg, progress=console.RichProgress())
    selected, total = len(result.mask.selected), result.mask.total
    if json_:
        console.out.print_json(json.dumps({
            "out": str(result.out), "k": result.k, "selected": result.mask.selected, "n_selected": selected,
            "total": total, "bias_ratio": f"{result.bias.numerator}:{result.bias.denominator}",
            "minority": {str(y): s for y, s in result.minority.items()}, "sizes": result.sizes,
            "cutoffs": {"delta1": result.cutoffs[0], "delta2": result.cutoffs[1]}, "blocks": result.blocks,
            "plot": None if result.plot is None else str(result.plot), "seconds": round(result.seconds, 2),
        }))
        return
    if result.estimate is not None:
        e = result.estimate
        console.out.print(
            f"bias estimate: error rate {e.error_rate:.1%} on real data -> ratio {result.bias.numerator}:"
            f"{result.bias.denominator}; minority cells "
            + ", ".join(f"(target={y}, protected={s})" for y, s in result.minority.items())
        )
    from rich.table import Table

    table = Table(title=f"{selected} of {total} tensors selected (k={result.k}) -> {result.out}")
    for col in ("block", "kind", "selected", "total"):
        table.add_column(col, justify="right" if col in ("selected", "total") else "left")
    for row in result.blocks:
        table.add_row(row["block"], row["kind"], str(row["selected"]), str(row["total"]))
    console.out.print(table)
    console.out.print(f"K1: Δ1 ≤ {result.cutoffs[0]:.4g} (the {result.k} least domain-sensitive); K2: Δ2 ≥ "
                      f"{result.cutoffs[1]:.4g} (the {result.k} most bias-sensitive)"
                      + (f"; plot -> {result.plot}" if result.plot else ""), markup=False)
