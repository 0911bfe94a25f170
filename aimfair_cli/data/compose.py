"""`aimfair data compose`: the training sets of the paper's from-scratch strategies (Tab. 3), as manifests.

    synthetic   balanced synthetic images only (n in total, n/4 per group);
    supplement  the real training set plus n balanced synthetic images, trained on together [47];
    repair      the real training set with synthetic images added to every (target, protected) cell smaller than
                the largest, until all four cells are as large as it [9, 56];
    subsample   n images of the real training set drawn at random (seeded), no synthetic ones: the smaller training
                sets of the paper's Tab. 2 (group labels are neither needed nor used).

The synthetic images are drawn (seeded) from a synth manifest's pool; rows keep their images where they are
(`file_name` is written relative to the new manifest's folder), so nothing is copied. A `source` column says
which rows are real and which synthetic.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import layout
from ..core.errors import UsageError
from ..core.fsio import check_outputs, check_suffix
from ..core.manifest import FORMATS, Manifest, read_manifest, write_manifest
from ..core.options import MAX_IMAGES, MAX_SEED, check, option
from ..fairness.cells import CELLS
from ..masking.synthsets import balanced_quotas, draw_balanced

KINDS = ("synthetic", "supplement", "repair", "subsample")
STAGE = "data_compose"
MSG_NEEDS_N = "--kind {kind} needs --n (balanced synthetic images in total)"
MSG_SUBSAMPLE_N = "--kind subsample: --n {n} is more than the {have} images of {real}"
MSG_POOL_SMALL = ("{synth} holds {have} images of cell target={y}, protected={s}; --kind {kind} needs {need} "
                  "(make more with `aimfair synth --n`)")


@dataclass
class ComposeConfig:
    """Options of `aimfair data compose`."""

    kind: str = option("synthetic", choices=KINDS, help="synthetic: balanced synthetic only; supplement: real + "
                       "balanced synthetic; repair: real, with synthetic images filling every cell up to the largest; subsample: "
                       "--n real images drawn at random (Tab. 2).")
    real: Path = option(layout.TRAIN, path="file", help="Biased real training manifest (supplement, repair).")
    synth: Path = option(layout.SYNTH_MANIFEST, path="file", help="Synthetic manifest: the pool images are drawn from.")
    out: Path = option(Path("sets/train.csv"), short=("-o",), path="file", help="Manifest to write (.csv or .jsonl).")
    n: int | None = option(None, min=4, max=MAX_IMAGES, help="Balanced synthetic images in total, n/4 per group "
                           "(synthetic, supplement); real images (subsample).",
                           default_text="as many real images as --real holds")
    seed: int = option(0, help="Random seed of the draw.", min=0, max=MAX_SEED)


def _relative_rows(m: Manifest, base: Path, source: str) -> list[dict[str, Any]]:
    return [{**r, "file_name": os.path.relpath(m.image_path(r).resolve(), base), "source": source} for r in m.rows]


def _pool_check(pools: dict[tuple[int, int], list], need: dict[tuple[int, int], int], synth: Path, kind: str) -> None:
    for (y, s), k in need.items():
        if len(pools[(y, s)]) < k:
            raise UsageError(MSG_POOL_SMALL.format(synth=synth, have=len(pools[(y, s)]), y=y, s=s, kind=kind, need=k))


def _subsample(cfg: ComposeConfig) -> tuple[Path, dict[str, int]]:
    """--n rows of --real, drawn with the seed, in their manifest order."""
    check_outputs({"--out": cfg.out}, {"--real": cfg.real})
    real = read_manifest(cfg.real)
    n = cfg.n if cfg.n is not None else len(real.rows)
    if n > len(real.rows):
        raise UsageError(MSG_SUBSAMPLE_N.format(n=n, have=len(real.rows), real=cfg.real))
    keep = sorted(random.Random(f"{cfg.seed}:subsample").sample(range(len(real.rows)), n))
    base = Path(cfg.out).resolve().parent
    rows = _relative_rows(Manifest(path=real.path, rows=[real.rows[i] for i in keep], columns=real.columns), base,
                          "real")
    base.mkdir(parents=True, exist_ok=True)
    write_manifest(cfg.out, rows, columns=["file_name", "target", "protected", "source"])
    return Path(cfg.out), {"real": len(rows)}


def compose_manifest(cfg: ComposeConfig) -> tuple[Path, dict[str, int]]:
    """Write the composed manifest; returns its path and its rows per source and cell."""
    cfg = check(cfg)
    check_suffix(cfg.out, FORMATS, "--out")
    if cfg.kind == "subsample":
        return _subsample(cfg)
    uses_real = cfg.kind != "synthetic"
    check_outputs({"--out": cfg.out}, {"--synth": cfg.synth, "--real": cfg.real if uses_real else None})
    synth = read_manifest(cfg.synth, require_protected=True)
    real = read_manifest(cfg.real, require_protected=True) if uses_real or cfg.n is None else None
    base = Path(cfg.out).resolve().parent
    pools: dict[tuple[int, int], list] = {c: [] for c in CELLS}
    for r in synth.rows:
        pools[(r["target"], r["protected"])].append(r)
    rows: list[dict[str, Any]] = []
    if uses_real:
        rows += _relative_rows(real, base, "real")
    if cfg.kind == "repair":
        counts = {c: 0 for c in CELLS}
        for r in real.rows:
            counts[(r["target"], r["protected"])] += 1
        top = max(counts.values())
        need = {c: top - k for c, k in counts.items()}
        _pool_check(pools, need, cfg.synth, cfg.kind)
        rng = random.Random(f"{cfg.seed}:repair")
        added = [r for c in CELLS for r in rng.sample(pools[c], need[c])]
    else:
        n = cfg.n if cfg.n is not None else len(real.rows)
        _pool_check(pools, balanced_quotas(n), cfg.synth, cfg.kind)
        added = draw_balanced(synth.rows, n=n, seed=cfg.seed)
    rows += _relative_rows(Manifest(path=synth.path, rows=added, columns=synth.columns), base, "synthetic")
    base.mkdir(parents=True, exist_ok=True)
    write_manifest(cfg.out, rows, columns=["file_name", "target", "protected", "source"])
    summary: dict[str, int] = {}
    for r in rows:
        key = f"{r['source']} y={r['target']} s={r['protected']}"
        summary[key] = summary.get(key, 0) + 1
    return Path(cfg.out), summary
