"""CelebA import: the official label lists -> a biased train manifest and the official val/test manifests.

Reads, under ROOT:
  img_align_celeba/          the aligned images (also accepted: Kaggle's img_align_celeba/img_align_celeba/
                             and the Google-Drive layout Img/img_align_celeba/, Anno/, Eval/)
  list_attr_celeba.txt       line 1 the image count, line 2 the 40 attribute names, then `name -1/1 ...`
                             separated by runs of spaces; or list_attr_celeba.csv (`image_id,<attr>...`)
  list_eval_partition.txt    `name 0|1|2` (0 train, 1 val, 2 test); or list_eval_partition.csv
                             (`image_id,partition`)

Writes train.csv (the exact per-cell quotas of `bias.cell_quotas`, taken in file order from the train
partition, or drawn at random when a seed is given), val.csv and test.csv (the whole official partitions), with
columns file_name, target, protected, split. Only images that exist are listed.

The helpers shared with the other importers (ImportResult, write_splits, ...) are in splits.py.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..core import layout
from ..core.errors import DataError
from ..core.options import MAX_IMAGES, MAX_SEED, check, option
from ..core.progress import NULL, Progress
from ..fairness.cells import BIAS_HELP, CELLS, cell_quotas, parse_bias
from .splits import (ImportResult, check_distinct, check_root, check_split_outputs, close_names, manifest_file_name,
                     write_splits)

log = logging.getLogger(__name__)

STAGE = "data_celeba"  # config-file section and resolved-config name
PARTITIONS = {0: "train", 1: "val", 2: "test"}
IMAGE_DIRS = ("img_align_celeba/img_align_celeba", "img_align_celeba", "Img/img_align_celeba")
LABEL_DIRS = (".", "Anno", "Eval")
ATTR_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")

# Shared with utkface.py.

MSG_NO_IMAGE_DIR = "image folder not found: {path} (expected the official img_align_celeba/ folder)"
MSG_NO_ATTR_FILE = "attribute file not found in {root}: expected list_attr_celeba.txt or list_attr_celeba.csv"
MSG_NO_PARTITION_FILE = (
    "partition file not found in {root}: expected list_eval_partition.txt or list_eval_partition.csv"
)
MSG_UNKNOWN_ATTRIBUTE = "unknown attribute '{name}' in {path} (closest: {close})"
MSG_BAD_HEADER = "{path}: line {line}: expected the attribute names"
MSG_BAD_FIELDS = "{path}: line {line}: expected {expected} fields, got {got}"
MSG_BAD_VALUE = "{path}: line {line}: attribute '{name}': expected -1 or 1, got {value!r}"
MSG_BAD_PARTITION = "{path}: line {line}: expected partition 0, 1 or 2, got {value!r}"
MSG_CANNOT_FILL = "cannot fill cell (target={t}, protected={p}): asked {asked}, only {have} in the train partition"
MSG_EMPTY_PARTITION = "no image of the {split} partition found in {path}"
MSG_MISSING_IMAGES = "{n} image(s) listed in {path} are not in {image_dir}; skipped"
MSG_UNLISTED_IMAGES = "{n} image(s) in {path} have no partition in {partition}; skipped"


@dataclass
class CelebaConfig:
    """Options of `aimfair data celeba` with their defaults (the paper's CelebA setting)."""

    root: Path | None = option(None, argument=True, help="CelebA folder holding img_align_celeba/, list_attr_celeba.txt "
                               "and list_eval_partition.txt (or their .csv forms).")
    out: Path = option(layout.DATA_DIR, short=("-o",), path="dir",
                       help="Output folder for train.csv, val.csv and test.csv.")
    target: str = option("Smiling", help="Attribute to predict, any of the 40 CelebA names.")
    protected: str = option("Male", help="Protected attribute, any of the 40 CelebA names.")
    bias: str = option("1:9", help=BIAS_HELP)
    n: int = option(20000, help="Images in the biased train subset.", min=1, max=MAX_IMAGES)
    # None: the first images of each cell in file order (reproducible without a seed). An int: a seeded random
    # draw from the train partition, as the paper describes ("we randomly sample a biased subset").
    seed: int | None = option(None, min=0, max=MAX_SEED, default_text="file order",
                              help="Draw the train subset at random with this seed instead of taking each cell's first "
                              "images in file order.")


@dataclass(frozen=True)
class CelebaLayout:
    image_dir: Path
    attr_file: Path
    partition_file: Path


@dataclass(frozen=True)
class Labelled:
    """One image with its two labels; `index` is its position in the attribute file."""

    index: int
    name: str
    target: int
    protected: int

    @property
    def cell(self) -> tuple[int, int]:
        return (self.target, self.protected)


def import_celeba(
    *,
    root: str | os.PathLike,
    out: str | os.PathLike,
    config: CelebaConfig | None = None,
    progress: Progress = NULL,
) -> "ImportResult":
    """Write `<out>/train.csv`, `val.csv`, `test.csv` and the resolved config; nothing if anything fails."""
    cfg = check(config or CelebaConfig())
    n = cfg.n
    quotas = cell_quotas(n, parse_bias(cfg.bias))
    check_distinct(cfg.target, cfg.protected)
    root = check_root(root)
    layout = find_layout(root)
    check_split_outputs(out, STAGE, {"the attribute file": layout.attr_file,
                                     "the partition file": layout.partition_file})

    labels = read_attributes(layout.attr_file, cfg.target, cfg.protected, progress=progress)
    partition = read_partition(layout.partition_file)
    present = {e.name for e in os.scandir(layout.image_dir) if e.is_file()}

    by_split: dict[str, list[Labelled]] = {s: [] for s in PARTITIONS.values()}
    missing = unlisted = 0
    for item in labels:
        part = partition.get(item.name)
        if part is None:
            unlisted += 1
        elif item.name not in present:
            missing += 1
        else:
            by_split[PARTITIONS[part]].append(item)

    train = take_quotas(by_split["train"], quotas, seed=cfg.seed)
    for split in ("val", "test"):
        if not by_split[split]:
            raise DataError(MSG_EMPTY_PARTITION.format(split=split, path=layout.image_dir))

    warnings = []
    if missing:
        warnings.append(MSG_MISSING_IMAGES.format(n=missing, path=layout.attr_file.name, image_dir=layout.image_dir))
    if unlisted:
        warnings.append(
            MSG_UNLISTED_IMAGES.format(n=unlisted, path=layout.attr_file.name, partition=layout.partition_file.name)
        )

    def rows(items: Sequence[Labelled], split: str) -> list[dict[str, Any]]:
        return [
            {
                "file_name": manifest_file_name(layout.image_dir / it.name, out=out, root=root),
                "target": it.target,
                "protected": it.protected,
                "split": split,
            }
            for it in items
        ]

    splits = {"train": rows(train, "train"), **{s: rows(by_split[s], s) for s in ("val", "test")}}
    resolved = {**asdict(cfg), "root": os.path.abspath(root), "out": os.path.abspath(out)}
    return write_splits(out, splits, stage=STAGE, config=resolved, warnings=warnings)


def find_layout(root: Path) -> CelebaLayout:
    image_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    if image_dir is None:
        raise DataError(MSG_NO_IMAGE_DIR.format(path=root / "img_align_celeba"))
    attr_file = _first_file(root, ATTR_FILES)
    if attr_file is None:
        raise DataError(MSG_NO_ATTR_FILE.format(root=root))
    partition_file = _first_file(root, PARTITION_FILES)
    if partition_file is None:
        raise DataError(MSG_NO_PARTITION_FILE.format(root=root))
    return CelebaLayout(image_dir=image_dir, attr_file=attr_file, partition_file=partition_file)


def _first_file(root: Path, names: Sequence[str]) -> Path | None:
    # The .txt form wins over .csv; the flat layout wins over Anno/ and Eval/.
    for name in names:
        for d in LABEL_DIRS:
            if (root / d / name).is_file():
                return root / d / name
    return None


# ---- label files ----------------------------------------------------------------------------------------


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-empty line: runs of spaces in .txt, commas in .csv."""
    from ..core.fsio import MSG_NOT_UTF8

    with open(path, newline="", encoding="utf-8-sig") as fh:
        try:
            if path.suffix.lower() == ".csv":
                for i, row in enumerate(csv.reader(fh), 1):
                    fields = [f.strip() for f in row]
                    if any(fields):
                        yield i, fields
            else:
                for i, line in enumerate(fh, 1):
                    fields = line.split()
                    if fields:
                        yield i, fields
        except UnicodeDecodeError:
            raise DataError(MSG_NOT_UTF8.format(path=path)) from None


def read_attributes(
    path: Path, target: str, protected: str, *, progress: Progress = NULL
) -> list[Labelled]:
    """The (name, target, protected) of every image, in file order; -1 reads as 0."""
    is_csv = path.suffix.lower() == ".csv"
    records = _records(path)
    line, header = next(records, (1, []))
    total = None
    if not is_csv and len(header) == 1 and header[0].isdigit():  # the official .txt starts with the image count
        total = int(header[0])
        line, header = next(records, (line + 1, []))
    names = header[1:] if is_csv else header  # the .csv header starts with image_id
    first = next(records, None)
    if first is not None and not is_csv and len(first[1]) == len(names):
        names = names[1:]  # some re-exports put a name column in the .txt header too
    if not names:
        raise DataError(MSG_BAD_HEADER.format(path=path, line=line))
    ti = resolve_attribute(target, names, path) + 1
    pi = resolve_attribute(protected, names, path) + 1
    width = len(names) + 1

    out: list[Labelled] = []
    with progress.task(f"reading {path.name}", total=total) as task:
        for line, fields in itertools.chain([first] if first else [], records):
            if len(fields) != width:
                raise DataError(MSG_BAD_FIELDS.format(path=path, line=line, expected=width, got=len(fields)))
            out.append(Labelled(len(out), fields[0], _binary(fields[ti], path, line, target),
                                _binary(fields[pi], path, line, protected)))
            if len(out) % 10_000 == 0:
                task.advance(10_000)
        task.advance(len(out) % 10_000)
    if total is not None and total != len(out):
        log.warning("%s announces %d images but lists %d", path, total, len(out))
    return out


def _binary(value: str, path: Path, line: int, name: str) -> int:
    if value == "1":
        return 1
    if value in ("-1", "0"):  # official files use -1; some re-exports use 0
        return 0
    raise DataError(MSG_BAD_VALUE.format(path=path, line=line, name=name, value=value))


def resolve_attribute(name: str, names: Sequence[str], path: Path | str) -> int:
    """Index of attribute `name` (exact spelling); unknown names list the closest ones."""
    try:
        return list(names).index(name)
    except ValueError:
        raise DataError(MSG_UNKNOWN_ATTRIBUTE.format(name=name, path=path, close=close_names(name, names))) from None


def read_partition(path: Path) -> dict[str, int]:
    """Image name -> 0 (train), 1 (val) or 2 (test)."""
    out: dict[str, int] = {}
    for line, fields in _records(path):
        if len(fields) != 2:
            raise DataError(MSG_BAD_FIELDS.format(path=path, line=line, expected=2, got=len(fields)))
        value = fields[1]
        if value not in ("0", "1", "2"):
            if line == 1 and path.suffix.lower() == ".csv":
                continue  # the header: image_id,partition
            raise DataError(MSG_BAD_PARTITION.format(path=path, line=line, value=value))
        out[fields[0]] = int(value)
    return out


def take_quotas(pool: Sequence[Labelled], quotas: dict[tuple[int, int], int], *, seed: int | None) -> list[Labelled]:
    """The first `quotas[cell]` images of each cell (file order, or a seeded shuffle); result in file order."""
    available = Counter(it.cell for it in pool)
    for cell in CELLS:
        if available[cell] < quotas[cell]:
            raise DataError(MSG_CANNOT_FILL.format(t=cell[0], p=cell[1], asked=quotas[cell], have=available[cell]))
    order = list(pool)
    if seed is not None:
        random.Random(seed).shuffle(order)
    left = dict(quotas)
    chosen = []
    for it in order:
        if left[it.cell] > 0:
            left[it.cell] -= 1
            chosen.append(it)
    return sorted(chosen, key=lambda it: it.index)
