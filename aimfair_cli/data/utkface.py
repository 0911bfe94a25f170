"""UTKFace import: labels from file names -> biased train, balanced val and balanced test manifests.

File names read `age_gender_race_date.jpg` (the aligned-and-cropped release adds `.chip.jpg`): gender 0 male,
1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others. Images are found anywhere under ROOT. Names
that do not parse (the real dataset has a few) are skipped and reported in one warning.

Attributes offered: Female (gender 1), White (race 0), Young (age <= young_max_age).

Splits, all disjoint, after one seeded shuffle of every usable image:
  test  `test_per_group` images per (target, protected) cell, taken first so that it does not change with
        --n or --bias (the paper's balanced test of 3200 = 4 x 800);
  train the exact cell quotas of `bias.cell_quotas(n, bias)` from what is left;
  val   a balanced held-out set from what is left after that: `val_per_group` per cell, or by default as many
        per cell as every cell can spare, at most `test_per_group`. (With the paper's setting the White-male
        cell holds ~5.5k images, of which train and test take 5.3k, so a val as large as the test set
        rarely fits.) Balanced like the test set, since there is no official UTKFace val partition.
"""

from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core import layout
from ..core.errors import DataError, UsageError
from ..core.options import MAX_IMAGES, MAX_SEED, check, option
from ..core.progress import NULL, Progress
from ..fairness.cells import BIAS_HELP, CELLS, cell_quotas, parse_bias
from .splits import (
    ImportResult,
    check_distinct,
    check_root,
    check_split_outputs,
    close_names,
    manifest_file_name,
    write_splits,
)

log = logging.getLogger(__name__)

STAGE = "data_utkface"  # config-file section and resolved-config name
ATTRIBUTES = ("Female", "White", "Young")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# age_gender_race_date, then .jpg or .jpg.chip.jpg; gender and race are range-checked after the match.
NAME_RE = re.compile(r"(\d{1,3})_(\d+)_(\d+)_(\d+)\.jpg(?:\.chip\.jpg)?", re.IGNORECASE)

MSG_UNKNOWN_ATTRIBUTE = "unknown UTKFace attribute '{name}' (offered: {offered}; closest: {close})"
MSG_NO_IMAGES = "no UTKFace image found in {root} (expected names like 25_1_0_20170116174525125.jpg.chip.jpg)"
MSG_UNPARSABLE = "skipped {n} file(s) whose names do not read as age_gender_race_date.jpg, e.g. {examples}"
MSG_CANNOT_FILL = "cannot fill cell (target={t}, protected={p}) of the {split} set: asked {asked}, only {have} {where}"
MSG_NO_VAL = (
    "no image left for the val set: cell (target={t}, protected={p}) is used up by train and test "
    "(lower --n or --test-per-group)"
)
WHERE = {"test": "usable images", "train": "left after the test set", "val": "left after the train and test sets"}


@dataclass
class UtkfaceConfig:
    """Options of `aimfair data utkface` with their defaults (the paper's UTKFace setting)."""

    root: Path | None = option(None, argument=True, help="UTKFace folder; images named age_gender_race_date.jpg(.chip.jpg) "
                               "anywhere below it.")
    out: Path = option(layout.DATA_DIR, short=("-o",), path="dir",
                       help="Output folder for train.csv, val.csv and test.csv.")
    target: str = option("Female", help="Attribute to predict: Female, White or Young.")
    protected: str = option("White", help="Protected attribute: Female, White or Young.")
    bias: str = option("1:9", help=BIAS_HELP)
    n: int = option(10000, help="Images in the biased train subset.", min=1, max=MAX_IMAGES)
    test_per_group: int = option(800, help="Images per cell in the balanced test set.", min=1, max=MAX_IMAGES)
    val_per_group: int | None = option(None, min=1, max=MAX_IMAGES, help="Images per cell in the balanced val set.",
                                       default_text="as many as every cell can spare, at most --test-per-group")
    young_max_age: int = option(35, help="Oldest age that counts as Young.", min=0, max=150)
    seed: int = option(0, help="Random seed; the same seed reproduces the run.", min=0, max=MAX_SEED)


@dataclass(frozen=True)
class Face:
    path: Path
    age: int
    gender: int  # 1 = female
    race: int  # 0 = White

    def label(self, attribute: str, young_max_age: int) -> int:
        if attribute == "Female":
            return self.gender
        if attribute == "White":
            return int(self.race == 0)
        return int(self.age <= young_max_age)  # Young


def parse_name(name: str) -> tuple[int, int, int] | None:
    """(age, gender, race) from a UTKFace file name, or None if it does not follow the scheme."""
    m = NAME_RE.fullmatch(name)
    if not m:
        return None
    age, gender, race = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if gender not in (0, 1) or not 0 <= race <= 4:
        return None
    return age, gender, race


def scan(root: Path, *, progress: Progress = NULL) -> tuple[list[Face], list[str]]:
    """Every image under root as a Face, sorted by path, plus the (relative) names that did not parse."""
    files = sorted(
        (p for p in root.rglob("*") if p.name.lower().endswith(IMAGE_SUFFIXES) and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    faces: list[Face] = []
    bad: list[str] = []
    with progress.task("reading UTKFace file names", total=len(files)) as task:
        for p in files:
            parsed = parse_name(p.name)
            if parsed is None:
                bad.append(p.relative_to(root).as_posix())
            else:
                faces.append(Face(p, *parsed))
        task.advance(len(files))
    return faces, bad


def check_attribute(name: str) -> None:
    if name not in ATTRIBUTES:
        raise UsageError(
            MSG_UNKNOWN_ATTRIBUTE.format(
                name=name, offered=", ".join(ATTRIBUTES), close=close_names(name, ATTRIBUTES, 1)
            )
        )


def import_utkface(
    *,
    root: str | os.PathLike,
    out: str | os.PathLike,
    config: UtkfaceConfig | None = None,
    progress: Progress = NULL,
) -> ImportResult:
    """Write `<out>/train.csv`, `val.csv`, `test.csv` and the resolved config; nothing if anything fails."""
    cfg = check(config or UtkfaceConfig())
    n, k, v, seed = cfg.n, cfg.test_per_group, cfg.val_per_group, cfg.seed
    quotas = cell_quotas(n, parse_bias(cfg.bias))
    for name in (cfg.target, cfg.protected):
        check_attribute(name)
    check_distinct(cfg.target, cfg.protected)
    root = check_root(root)
    check_split_outputs(out, STAGE, {})

    faces, bad = scan(root, progress=progress)
    if not faces:
        raise DataError(MSG_NO_IMAGES.format(root=root))
    # Shuffle from the sorted list, so the draw depends on the seed and the files, not on directory order.
    random.Random(seed).shuffle(faces)
    left: dict[tuple[int, int], list[Face]] = {cell: [] for cell in CELLS}
    for f in faces:
        left[(f.label(cfg.target, cfg.young_max_age), f.label(cfg.protected, cfg.young_max_age))].append(f)

    test = _take(left, {cell: k for cell in CELLS}, "test")
    train = _take(left, quotas, "train")
    if v is None:
        spare = min(left.items(), key=lambda kv: len(kv[1]))
        if not spare[1]:
            raise DataError(MSG_NO_VAL.format(t=spare[0][0], p=spare[0][1]))
        v = min(k, len(spare[1]))
    val = _take(left, {cell: v for cell in CELLS}, "val")

    def rows(items: list[tuple[tuple[int, int], Face]], split: str) -> list[dict[str, Any]]:
        items = sorted(items, key=lambda cf: cf[1].path.relative_to(root).as_posix())
        return [
            {"file_name": manifest_file_name(f.path, out=out, root=root), "target": t, "protected": p, "split": split}
            for (t, p), f in items
        ]

    warnings = []
    if bad:
        examples = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        warnings.append(MSG_UNPARSABLE.format(n=len(bad), examples=examples))
    splits = {"train": rows(train, "train"), "val": rows(val, "val"), "test": rows(test, "test")}
    resolved = {**asdict(cfg), "root": os.path.abspath(root), "out": os.path.abspath(out), "val_per_group": v}
    return write_splits(out, splits, stage=STAGE, config=resolved, warnings=warnings)


def _take(
    left: dict[tuple[int, int], list[Face]], quotas: dict[tuple[int, int], int], split: str
) -> list[tuple[tuple[int, int], Face]]:
    """Remove the first quotas[cell] faces of each cell from `left` (in shuffled order) and return them."""
    for cell in CELLS:
        if len(left[cell]) < quotas[cell]:
            raise DataError(
                MSG_CANNOT_FILL.format(
                    t=cell[0], p=cell[1], split=split, asked=quotas[cell], have=len(left[cell]), where=WHERE[split]
                )
            )
    taken = []
    for cell in CELLS:
        taken += [(cell, f) for f in left[cell][: quotas[cell]]]
        del left[cell][: quotas[cell]]
    return taken
