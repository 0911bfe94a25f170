"""`aimfair data compose`: the training set of a from-scratch strategy of the paper's Tab. 3, as a manifest."""

from __future__ import annotations

import json

from ..data.compose import STAGE, ComposeConfig, compose_manifest
from .console import out
from .options import command


@command(STAGE, ComposeConfig)
def compose(cfg: ComposeConfig, *, json_out: bool) -> None:
    """Write a manifest of balanced synthetic images (synthetic), real plus balanced synthetic images (supplement) or
    real images with synthetic ones filling every cell up to the largest (repair), for `aimfair pretrain --train`."""
    path, summary = compose_manifest(cfg)
    if json_out:
        out.print_json(json.dumps({"out": str(path), "rows": summary}))
    else:
        out.print(f"wrote {sum(summary.values())} rows -> {path} (" + ", ".join(f"{k}: {v}" for k, v in summary.items())
                  + ")", markup=False)
