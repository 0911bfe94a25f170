"""`aimfair mask`: choose the parameter tensors to fine-tune (Selective Mask Generation)."""

from __future__ import annotations

import json

from ..core import dist
from ..stages.mask import MaskConfig, run_mask
from . import console
from .options import command


@command("mask", MaskConfig)
def mask(cfg: MaskConfig, *, json_out: bool) -> None:
    """Compute mean gradients on real-biased, synthetic-biased and synthetic-balanced data and keep the k
    tensors least sensitive to the domain gap that are also among the k most sensitive to the bias."""
    result = run_mask(cfg, progress=console.make_progress())
    if not dist.is_main():
        return
    selected, total = len(result.mask.selected), result.mask.total
    if json_out:
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
