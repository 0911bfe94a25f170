"""`aimfair data demo`: the offline benchmark's "real" side, rendered in the photo style.

Faces have target Smiling and protected Male; every other attribute is drawn from a natural distribution
(`aimfair_cli.render.natural`), not from prompts. A share of the faces (`--ambiguous`, 10 % by default, in every
split and cell) wear a faint closed-mouth expression whatever their label, like the CelebA faces whose Smiling
label annotators could give either way: nothing in the face tells their label, so a model trained on the biased
split learns to guess it from the gender there, and balanced synthetic data, which has no such faces, cannot
teach otherwise. The train split is biased with the CelebA quotas
(`aimfair_cli.fairness.cells.cell_quotas`); val and test follow the mild natural skew of CelebA's test partition.

    OUT/images/{train,val,test}/000000.png
    OUT/train.csv, OUT/val.csv, OUT/test.csv      file_name (relative to OUT), target, protected, split
    OUT/data_demo.config.yaml                     the resolved options

Image i of a split is a pure function of (seed, split, i), so the same seed writes identical files. Everything
is rendered into a temporary folder beside OUT and moved into place at the end: an interrupted run leaves the
previous output as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from ..core import layout
from ..core.errors import UsageError
from ..core.options import MAX_SEED, check, option
from ..core.progress import NULL, Progress
from ..fairness.cells import BIAS_HELP, CELLS, cell_quotas, parse_bias
from .splits import ImportResult

log = logging.getLogger(__name__)

STAGE = "data_demo"
SPLITS = ("train", "val", "test")
IMAGES_DIR = "images"
MARKER = ".aimfair-demo"  # marks an images/ folder this command wrote (and may therefore replace)

# CelebA's test partition, cells (target, protected) = (Smiling, Male): (0,0) 27 %, (0,1) 23 %, (1,0) 35 %,
# (1,1) 15 %. Val and test of the demo follow it.
NATURAL_MIX: dict[tuple[int, int], float] = {(0, 0): 0.27, (0, 1): 0.23, (1, 0): 0.35, (1, 1): 0.15}

MSG_OUT_NOT_DIR = "output path exists and is not a folder: {out}"
MSG_BUSY = "another 'aimfair data demo' is writing into {out}; wait for it or choose another --out"
TMP_PREFIX = ".demo-tmp-"
MSG_FOREIGN_IMAGES = "{path} exists and was not written by 'aimfair data demo'; move it away or choose another --out"

# The offline benchmark is drawn on the CPU, ~1,000 images/s at 64 px; past these it is a typo, not a plan.
MAX_DEMO_IMAGES = 1_000_000
MAX_DEMO_SIZE = 1024


@dataclass
class DemoDataConfig:
    """Options of `aimfair data demo` with their defaults."""

    out: Path = option(layout.DATA_DIR, short=("-o",), path="dir",
                       help="Output folder for images/, train.csv, val.csv and test.csv.")
    n_train: int = option(4000, help="Images in the biased train split.", min=4, max=MAX_DEMO_IMAGES)
    n_val: int = option(1000, help="Images in the val split (CelebA-like mild skew).", min=4, max=MAX_DEMO_IMAGES)
    n_test: int = option(1000, help="Images in the test split (CelebA-like mild skew).", min=4, max=MAX_DEMO_IMAGES)
    size: int = option(64, help="Image side in pixels.", min=16, max=MAX_DEMO_SIZE)
    bias: str = option("1:9", help=BIAS_HELP)
    ambiguous: float = option(0.10, min=0, max=1, help="Share of faces with a faint, closed-mouth expression whatever "
                              "their Smiling label (CelebA's ambiguous labels): the label cannot be read from them.")
    seed: int = option(0, help="Random seed; the same seed reproduces the run.", min=0, max=MAX_SEED)


@dataclass
class DemoResult(ImportResult):
    """What `aimfair data demo` wrote (as for the real-data imports), plus how fast it rendered."""

    seconds: float = 0.0
    images_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "seconds": round(self.seconds, 2), "images_per_s": round(self.images_per_s, 1)}


def recorded_config(cfg: DemoDataConfig) -> dict[str, Any]:
    """What `data_demo.config.yaml` holds: the options that decide the images. Not `out`: the file lies inside it,
    and the same options must give the same bytes wherever they are rendered."""
    return {k: v for k, v in asdict(cfg).items() if k != "out"}


def mixed_quotas(n: int, mix: dict[tuple[int, int], float] = NATURAL_MIX) -> dict[tuple[int, int], int]:
    """Exact counts summing to n that follow `mix` (largest remainders get the leftovers)."""
    raw = {cell: n * share / sum(mix.values()) for cell, share in mix.items()}
    counts = {cell: int(v) for cell, v in raw.items()}
    by_remainder = sorted(raw, key=lambda c: (-(raw[c] - counts[c]), CELLS.index(c)))
    for cell in by_remainder[: n - sum(counts.values())]:
        counts[cell] += 1
    return {cell: counts[cell] for cell in CELLS}


def split_cells(split: str, n: int, bias: str, seed: int) -> list[tuple[int, int]]:
    """The (target, protected) of each image of a split, in a seeded shuffled order."""
    import numpy as np

    quotas = cell_quotas(n, parse_bias(bias)) if split == "train" else mixed_quotas(n)
    cells = [cell for cell in CELLS for _ in range(quotas[cell])]
    rng = np.random.default_rng([seed, SPLITS.index(split), 0xDE40])
    order = rng.permutation(len(cells))
    return [cells[i] for i in order]


def _demo_face(seed: int, split: str, index: int, target: int, protected: int, ambiguous: float):
    """(render seed, attributes, expression) of image `index` of `split`."""
    import numpy as np

    from ..generators.base import image_seed
    from ..render import natural_attributes

    s = image_seed(seed, f"demo-{split}", index)
    attrs = natural_attributes(np.random.default_rng([s, 0xA77]), smiling=bool(target), male=bool(protected))
    subtle = bool(np.random.default_rng([s, 0x5B7]).random() < ambiguous)
    return s, attrs, "subtle" if subtle else "natural"


def render_demo_image(*, seed: int, split: str, index: int, target: int, protected: int, size: int,
                      ambiguous: float = DemoDataConfig.ambiguous):
    """Image `index` of `split`: natural attributes for its cell, drawn in the photo style; with probability
    `ambiguous` its expression does not show its label."""
    from ..render import render_face

    s, attrs, expression = _demo_face(seed, split, index, target, protected, ambiguous)
    return render_face(attrs, style="photo", size=size, seed=s, expression=expression), attrs


# How a demo face's expression is drawn, for sorting a model's errors (benchmarks/demo_properties.py --errors).
EXPRESSION_KINDS = ("smile, open", "smile, closed lips", "neutral", "talking", "ambiguous")


def demo_expression_kind(*, seed: int, split: str, index: int, target: int, protected: int,
                         ambiguous: float = DemoDataConfig.ambiguous) -> str:
    """Which of `EXPRESSION_KINDS` image `index` of `split` shows (the same draws as `render_demo_image`)."""
    import numpy as np

    from ..render.face import draw_params

    s, attrs, expression = _demo_face(seed, split, index, target, protected, ambiguous)
    if expression == "subtle":
        return "ambiguous"
    mouth_open = draw_params(attrs, np.random.default_rng(s), expression=expression).mouth_open > 0
    if target:
        return "smile, open" if mouth_open else "smile, closed lips"
    return "talking" if mouth_open else "neutral"


def _render_splits(tmp: Path, cfg: DemoDataConfig, sizes: dict[str, int],
                   progress: Progress) -> dict[str, list[dict[str, Any]]]:
    """Every split's images into `tmp/images/<split>/`, and their manifest rows."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        (tmp / IMAGES_DIR / split).mkdir(parents=True)
        rows[split] = []
        cells = split_cells(split, sizes[split], cfg.bias, cfg.seed)
        with progress.task(f"render {split}", total=len(cells)) as task:
            for i, (t, p) in enumerate(cells):
                img, _ = render_demo_image(seed=cfg.seed, split=split, index=i, target=t, protected=p,
                                           size=cfg.size, ambiguous=cfg.ambiguous)
                name = f"{IMAGES_DIR}/{split}/{i:06d}.png"
                img.save(tmp / name, format="PNG")
                rows[split].append({"file_name": name, "target": t, "protected": p, "split": split})
                task.advance(1)
    return rows


def _swap_in(out: Path, images: Path, config_path: Path, staged: dict[str, Path]) -> tuple[Path, dict[str, Path]]:
    """Move the staged images, config and manifests into `out`. The manifests are what makes a folder look
    imported, so the old ones go first and the new ones come last: a kill at any point of the swap leaves no
    manifest beside images they do not describe."""
    for split in SPLITS:
        (out / f"{split}.csv").unlink(missing_ok=True)
    images_final = out / IMAGES_DIR
    old = out / f".{IMAGES_DIR}.old.{os.getpid()}"
    if images_final.exists():
        os.replace(images_final, old)
    os.replace(images, images_final)
    final_config = out / config_path.name
    os.replace(config_path, final_config)
    paths = {}
    for split, path in staged.items():
        paths[split] = out / path.name
        os.replace(path, paths[split])
    shutil.rmtree(old, ignore_errors=True)
    return final_config, paths


@contextlib.contextmanager
def _writing_into(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder itself while this run writes into it (flock on the folder's
    descriptor: no lock file is left), and remove what runs killed before their clean-up left behind: staging
    folders and the previous images set aside during a swap. Under the lock, no other run can own them."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, so other runs' staging folders are left alone
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(MSG_BUSY.format(out=out)) from None
        stale = [*out.glob(f"{TMP_PREFIX}*"), *out.glob(f".{IMAGES_DIR}.old.*")]
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
        if stale:
            log.info("removed %d folder(s) an interrupted run left in %s", len(stale), out)
        yield
    finally:
        os.close(fd)


def make_demo_dataset(
    *,
    out: str | os.PathLike,
    n_train: int = DemoDataConfig.n_train,
    n_val: int = DemoDataConfig.n_val,
    n_test: int = DemoDataConfig.n_test,
    size: int = DemoDataConfig.size,
    bias: str = DemoDataConfig.bias,
    ambiguous: float = DemoDataConfig.ambiguous,
    seed: int = DemoDataConfig.seed,
    progress: Progress = NULL,
) -> DemoResult:
    """Render the demo dataset into `out` (see the module docstring for the layout)."""
    from ..core.fsio import check_writable

    cfg = check(DemoDataConfig(out=Path(out), n_train=n_train, n_val=n_val, n_test=n_test, size=size, bias=bias,
                               ambiguous=ambiguous, seed=seed))
    parse_bias(cfg.bias)

    out = cfg.out
    if out.exists() and not out.is_dir():
        raise UsageError(MSG_OUT_NOT_DIR.format(out=out))
    images_final = out / IMAGES_DIR
    if images_final.exists() and not (images_final / MARKER).is_file():
        raise UsageError(MSG_FOREIGN_IMAGES.format(path=images_final))
    check_writable(out, folder=True)  # a read-only or full destination is found before rendering
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)

    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    try:
        with _writing_into(out):
            return _render_into(out, cfg, sizes, progress)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _render_into(out: Path, cfg: DemoDataConfig, sizes: dict[str, int], progress: Progress) -> DemoResult:
    """Render into a staging folder inside `out`, then swap the result in (see `_swap_in`)."""
    from ..core.config import write_resolved_config
    from ..core.manifest import write_manifest

    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out))  # no suffix: config_path_for sees a folder
    started = time.perf_counter()
    try:
        images = tmp / IMAGES_DIR
        rows = _render_splits(tmp, cfg, sizes, progress)
        (images / MARKER).write_text("written by 'aimfair data demo'\n", encoding="utf-8")
        staged = {split: write_manifest(tmp / f"{split}.csv", rows[split],
                                        columns=("file_name", "target", "protected", "split")) for split in SPLITS}
        config_path = write_resolved_config(tmp, STAGE, recorded_config(cfg))
        seconds = time.perf_counter() - started
        final_config, paths = _swap_in(out, images, config_path, staged)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {split: {cell: sum(1 for r in rows[split] if (r["target"], r["protected"]) == cell) for cell in CELLS}
              for split in SPLITS}
    n_images = sum(sizes.values())
    log.info("rendered %d images in %.1f s", n_images, seconds)
    return DemoResult(out=out, paths=paths, counts=counts, config_path=final_config, seconds=seconds,
                      images_per_s=n_images / max(seconds, 1e-9))
