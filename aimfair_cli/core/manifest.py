"""Manifests: one row per image, as CSV or JSONL (chosen by the file extension).

Required column `file_name` (relative to the manifest's folder, or absolute) and `target` (0/1).
`protected` (0/1) is required for evaluation and synthetic data and may be empty for real training data.
Optional columns: group, prompt, seed, split, source, generator (others are kept as strings).
Every validation error names the file, the row (1-based, header not counted) and the column.
An image listed twice is an error (rows naming the same file once normalised, e.g. `a/x.png` and `./a/x.png`),
so no metric or training set counts it twice by accident; `allow_duplicates` keeps such rows with a warning.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ManifestError
from .fsio import MSG_NOT_UTF8, atomic_open

log = logging.getLogger(__name__)

REQUIRED = ("file_name", "target")
STANDARD_COLUMNS = ("file_name", "target", "protected", "group", "prompt", "seed", "split", "source", "generator")
LABEL_COLUMNS = ("target", "protected")
FORMATS = (".csv", ".jsonl")

MSG_NOT_FOUND = "manifest not found: {path}"
MSG_FORMAT = "{path}: unknown manifest format (use .csv or .jsonl)"
MSG_EMPTY = "{path}: manifest has no rows"
MSG_MISSING_COLUMN = "{path}: missing column '{column}'"
MSG_BAD_LABEL = "{path}: row {row}: column '{column}': expected 0 or 1, got {value!r}"
MSG_EMPTY_VALUE = "{path}: row {row}: column '{column}': value is empty"
MSG_BAD_JSON = "{path}: row {row}: not a JSON object"
MSG_DUPLICATE = (
    "{path}: rows {rows} list the same image {file_name}{more}; remove the repeated rows or pass --allow-duplicates"
)
MSG_DUPLICATE_KEPT = (
    "{path}: rows {rows} list the same image {file_name}{more}; kept because of --allow-duplicates "
    "(each row counts once, so a repeated image counts as often as it is listed)"
)
MSG_CSV_FIELD = "{path}: line {line}: a field is longer than {limit} characters (is the file a CSV manifest?)"
MSG_NAME_TOO_LONG = "{path}: row {row}: file_name is longer than the file system allows ({n} characters)"
SHOWN_ROWS = 10  # row numbers named per duplicated image


@dataclass
class Manifest:
    """Rows of a manifest, with labels parsed to ints (`protected` is None where empty)."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.path.parent

    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, row: dict[str, Any]) -> Path:
        p = Path(row["file_name"])
        return p if p.is_absolute() else self.root / p

    @property
    def targets(self) -> list[int]:
        return [r["target"] for r in self.rows]

    @property
    def protected(self) -> list[int | None]:
        return [r.get("protected") for r in self.rows]

    def require_protected(self) -> None:
        """Raise unless every row has a protected value (evaluation, synthetic data)."""
        if "protected" not in self.columns:
            raise ManifestError(MSG_MISSING_COLUMN.format(path=self.path, column="protected"))
        for i, r in enumerate(self.rows, 1):
            if r.get("protected") is None:
                raise ManifestError(MSG_EMPTY_VALUE.format(path=self.path, row=i, column="protected"))


def _parse_label(value: Any, *, path: Path, row: int, column: str, allow_empty: bool) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if allow_empty:
            return None
        raise ManifestError(MSG_EMPTY_VALUE.format(path=path, row=row, column=column))
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise ManifestError(MSG_BAD_LABEL.format(path=path, row=row, column=column, value=value))


def _raw_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        return _decoded_rows(path)
    except UnicodeDecodeError:
        raise ManifestError(MSG_NOT_UTF8.format(path=path)) from None


def _json_row(line: str) -> Any:
    """One JSONL line, or None when it is not JSON. Python refuses integers of more than 4300 digits
    (ValueError) and nesting deeper than its recursion limit (RecursionError): both are "not JSON" here."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None


def _decoded_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # utf-8-sig: spreadsheet programs often start CSV files with a byte-order mark
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            try:
                columns = list(reader.fieldnames or [])
                return columns, [dict(r) for r in reader]
            except csv.Error:  # Python's csv refuses a field over csv.field_size_limit() (128 KiB)
                raise ManifestError(MSG_CSV_FIELD.format(path=path, line=reader.line_num + 1,
                                                         limit=csv.field_size_limit())) from None
    if suffix == ".jsonl":
        rows: list[dict[str, Any]] = []
        columns: list[str] = []
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                obj = _json_row(line)
                if not isinstance(obj, dict):
                    raise ManifestError(MSG_BAD_JSON.format(path=path, row=len(rows) + 1))
                for k in obj:
                    if k not in columns:
                        columns.append(k)
                rows.append(obj)
        return columns, rows
    raise ManifestError(MSG_FORMAT.format(path=path))


def _rows_text(rows: list[int]) -> str:
    """[3, 7, 9] -> '3, 7 and 9' (the first SHOWN_ROWS, then how many more)."""
    shown = [str(r) for r in rows[:SHOWN_ROWS]]
    if len(rows) > SHOWN_ROWS:
        shown.append(f"{len(rows) - SHOWN_ROWS} more")
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _identity(manifest: Manifest, row: dict[str, Any], i: int) -> Any:
    """What makes two rows one image: the file's device and inode when it exists (so an absolute and a relative
    path, a symlink and a hard link all count), else its resolved path."""
    path = manifest.image_path(row)
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ManifestError(MSG_NAME_TOO_LONG.format(path=manifest.path, row=i, n=len(str(row["file_name"]))))
        return ("path", os.path.realpath(path))


def check_duplicates(manifest: Manifest, *, allow: bool = False) -> None:
    """Raise (or, with `allow`, log a warning) when two rows name the same image file."""
    where: dict[Any, list[int]] = {}
    for i, row in enumerate(manifest.rows, 1):
        where.setdefault(_identity(manifest, row, i), []).append(i)
    repeated = [rows for rows in where.values() if len(rows) > 1]
    if not repeated:
        return
    first = repeated[0]
    others = len(repeated) - 1
    more = f" (and {others} more image{'s' if others > 1 else ''} listed more than once)" if others else ""
    fields = dict(path=manifest.path, rows=_rows_text(first), file_name=manifest.rows[first[0] - 1]["file_name"],
                  more=more)
    if not allow:
        raise ManifestError(MSG_DUPLICATE.format(**fields))
    log.warning(MSG_DUPLICATE_KEPT.format(**fields))


def read_manifest(path: str | os.PathLike, *, require_protected: bool = False, allow_empty: bool = False,
                  allow_duplicates: bool = False) -> Manifest:
    """Read and validate a manifest. Labels become ints; `protected` may be None unless required; an image
    listed twice is an error unless `allow_duplicates` (then a warning, and the rows are kept)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ManifestError(MSG_FORMAT.format(path=path))
    if not path.is_file():
        raise ManifestError(MSG_NOT_FOUND.format(path=path))
    columns, raw = _raw_rows(path)
    if not raw and not allow_empty:
        raise ManifestError(MSG_EMPTY.format(path=path))
    needed = REQUIRED + (("protected",) if require_protected else ())
    for col in needed:
        if col not in columns and (raw or columns):
            raise ManifestError(MSG_MISSING_COLUMN.format(path=path, column=col))
    rows = []
    for i, r in enumerate(raw, 1):
        name = r.get("file_name")
        if name is None or str(name).strip() == "":
            raise ManifestError(MSG_EMPTY_VALUE.format(path=path, row=i, column="file_name"))
        row = dict(r)
        row["file_name"] = str(name)
        row["target"] = _parse_label(r.get("target"), path=path, row=i, column="target", allow_empty=False)
        row["protected"] = _parse_label(
            r.get("protected"), path=path, row=i, column="protected", allow_empty=not require_protected
        )
        rows.append(row)
    manifest = Manifest(path=path, rows=rows, columns=columns)
    check_duplicates(manifest, allow=allow_duplicates)
    return manifest


def _columns_for(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: list[str] = []
    for r in rows:
        for k in r:
            if k not in seen:
                seen.append(k)
    standard = [c for c in STANDARD_COLUMNS if c in seen]
    return standard + [c for c in seen if c not in standard]


def _csv_value(v: Any) -> Any:
    return "" if v is None else v


def write_manifest(path: str | os.PathLike, rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write rows atomically as CSV or JSONL (by extension). Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ManifestError(MSG_FORMAT.format(path=path))
    rows = list(rows)
    cols = _columns_for(rows, columns)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        if suffix == ".csv":
            writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            for r in rows:
                writer.writerow({c: _csv_value(r.get(c)) for c in cols})
        else:
            for r in rows:
                fh.write(json.dumps({c: r.get(c) for c in cols if c in r}, ensure_ascii=False) + "\n")
    return path
