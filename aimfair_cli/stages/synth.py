"""The `synth` stage: render N images per group from a prompt file, resumable and splittable.

Layout of the output folder (Hugging Face `load_dataset("imagefolder", data_dir=out)` reads it as is):

    out/<group>/000000.png ...           one image per index, written atomically
    out/metadata.jsonl                   the manifest: every image present, sorted by group then index
    out/.parts/<group>.<i>-of-<n>.jsonl  bookkeeping: one row per finished image, appended by shard i of n
    out/synth.config.yaml                the resolved options and the generator's own settings

Image `i` of group `G` always gets the seed `image_seed(seed, G, i)` and the same prompt (round-robin:
`prompts[i % len(prompts)]`; random: drawn by a `random.Random` seeded with that image seed), whatever the
batch size, shard or number of restarts, so a rerun reproduces the same bytes. Index `i` belongs to shard
`i mod n_shards`. A row is appended (and flushed) only after its image is in place, so a Ctrl-C or a kill -9
leaves complete images and complete rows; a rerun skips indices that have both and regenerates the rest.
`metadata.jsonl` is rebuilt from all part files at the end of every run, under a file lock, so it is
complete whichever shard finishes last. No image is ever deleted: asking for fewer images than are present
keeps the extra ones, and the manifest lists every image present. A resume only removes the temporary files
(`.<index>.png.*.tmp`) that a kill -9 left half-written, for the indices this process is about to redo.

One job per shard at a time: a run holds `out/.synth.<i>-of-<n>.lock` (its `--shard`, 0-of-1 without one)
for its whole length, and a second run whose shard overlaps it is refused at once (two runs with different
seeds would otherwise interleave their images in one manifest). Runs of disjoint shards (`--shard 0/2` and
`--shard 1/2`) work side by side. Under torchrun rank 0 holds the lock for the whole job; the other ranks
take none (their indices are disjoint from rank 0's), so a second job is stopped when its rank 0 is refused
and torchrun ends its other ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..core import dist, layout
from ..core.errors import DataError, GeneratorError, UsageError
from ..core.fsio import atomic_path, check_outputs, write_errors
from ..core.manifest import write_manifest
from ..core.options import MAX_IMAGES, MAX_SEED, option, pass_through
from ..core.progress import NULL, Progress
from ..core.tasks import TASKS, Group, PromptFile, find_prompt_file, load_prompt_file, task_for_group
from ..generators.base import ImageRequest, image_seed, make_generator
from ..generators.diffusion import DiffusersOptions
from ..generators.procedural import ProceduralOptions

log = logging.getLogger(__name__)

PROMPT_KINDS = ("contextual", "plain")
PROMPT_ORDERS = ("round-robin", "random")
MANIFEST_NAME = "metadata.jsonl"
PARTS_DIR = ".parts"
LOCK_NAME = ".lock"  # held briefly by whoever rewrites metadata.jsonl or synth.config.yaml
JOB_LOCK = ".synth.{i}-of-{n}.lock"  # held by a run for its whole length (see the module docstring)



@dataclass
class _SynthCore:
    """Options of `aimfair synth` (flags, the `synth:` section of aimfair.yaml): these, then the generators'
    own options (`ProceduralOptions`, `DiffusersOptions`), which default to None: they are passed on only when
    given, so each generator applies its own defaults and refuses options that are not its own."""

    group: str | None = option(None, help="Group to render (e.g. smiling_male), several separated by commas, or all "
                               "(every group of the task). Required.")
    n: int | None = option(None, short=("-n",), min=1, max=MAX_IMAGES,
                           help="Images per group: indices 0..N-1. A rerun makes only the missing ones; a larger N "
                           "extends; a smaller N deletes nothing. Required.")
    prompts: Path | None = option(None, path="file", help="Prompt file.",
                                  default_text=f"{layout.PROMPTS_DIR}/<task>.yaml in the run folder, else the shipped one")
    task: str | None = option(None, choices=tuple(TASKS), help="Task name.",
                              default_text="the prompt file's, or the one task that has --group")
    out: Path = option(layout.SYNTH_DIR, short=("-o",), path="dir",
                       help="Output folder: <group>/000000.png ... and metadata.jsonl.")
    generator: str = option("procedural",  # no fixed choices: make_generator knows the registered ones
                            help="procedural (offline, CPU, reads prompts/vocabulary.yaml) or diffusers (any diffusers "
                            "text-to-image pipeline).")
    seed: int = option(0, min=0, max=MAX_SEED,
                       help="Base seed; image i of group G gets a seed derived from (seed, G, i), so reruns, resumes, "
                       "shards and batch sizes give the same bytes.")
    batch_size: int = option(8, help="Images per generator call.", min=1, max=4096)
    prompt_kind: str = option("contextual", choices=PROMPT_KINDS, help="contextual (the file's prompt list) or plain "
                              "(its single plain prompt, the paper's baseline).")
    prompt_order: str = option("round-robin", choices=PROMPT_ORDERS, help="round-robin (image i uses prompt i mod P) "
                               "or random (drawn with an RNG seeded by the image's seed).")
    shard: str | None = option(None, help="Do only indices i with i mod N == I, as I/N (e.g. 0/2), to split work "
                               "across machines. Under torchrun the ranks split it further by themselves.",
                               default_text="everything")


# The generators' own options (each declared once, by its generator), as optional synth flags: passed on only
# when given, so each generator applies its own defaults and refuses options that are not its own.
_GENERATOR_FIELDS = [*pass_through(ProceduralOptions, only="--generator procedural only."),
                     *pass_through(DiffusersOptions, only="--generator diffusers only.")]
SynthConfig = dataclasses.make_dataclass("SynthConfig", _GENERATOR_FIELDS, bases=(_SynthCore,),
                                         namespace={"__doc__": _SynthCore.__doc__, "__module__": __name__})
GENERATOR_OPTIONS = tuple(name for name, _, _ in _GENERATOR_FIELDS)  # forwarded to make_generator when given


MSG_NO_GROUP = "--group is required (a group such as smiling_male, several separated by commas, or all)"
MSG_NO_N = "--n is required (images per group)"
MSG_BAD_SHARD = "--shard must look like i/n with 0 <= i < n (got {value!r})"
MSG_BAD_N = "--n must be at least 1 (got {n})"
MSG_BAD_BATCH = "--batch-size must be at least 1 (got {value})"
MSG_BAD_KIND = "unknown prompt kind '{value}' (known: contextual, plain)"
MSG_BAD_ORDER = "unknown prompt order '{value}' (known: round-robin, random)"
MSG_NO_GROUPS = "no groups to synthesize"
MSG_SETTINGS_CHANGED = (
    "{out} holds images made with other generator settings ({diffs}); use another --out or remove the folder"
)
MSG_MISMATCH = (
    "{out}: image {file} was made with other settings ({what} differs); "
    "use a new --out or the options it was made with"
)
MSG_ALL_NEEDS_TASK = "--group all needs --task or --prompts (which task's groups?)"
MSG_TASK_MISMATCH = "{path} holds prompts for task '{have}', not '{want}'"
MSG_MIXED_TASKS = "groups {groups} belong to different tasks; run synth once per task"
MSG_COUNT = "generator '{name}' returned {got} images for {want} prompts"
MSG_CANNOT_CREATE = "cannot create the output folder {out}: {reason}"
MSG_BUSY = "{out} is being written by another synth run (it holds {lock}); wait for it to finish or use another --out"
MSG_BAD_PART_ROW = "{path}: line {line}: '{field}' must be {rule}; got {value} (remove the line or the folder)"

_PART_RE = re.compile(r"^(?P<group>.+)\.(?P<i>\d+)-of-(?P<n>\d+)\.jsonl$")
_JOB_LOCK_RE = re.compile(r"^\.synth\.(?P<i>\d+)-of-(?P<n>\d+)\.lock$")
# fsio.atomic_path's temporary names: ".<final name>.<random>.tmp"
_IMAGE_TMP_RE = re.compile(r"^\.(?P<index>\d+)\.png\..+\.tmp$")


@dataclass
class SynthResult:
    out: Path
    manifest: Path
    shard: tuple[int, int]
    written: int  # images generated by this run
    skipped: int  # images of this shard already present
    seconds: float  # time spent generating and saving
    present: dict[str, int] = field(default_factory=dict)  # group -> images listed in the manifest

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "manifest": str(self.manifest),
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "written": self.written,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 2),
            "present": dict(self.present),
        }


# ---- options ---------------------------------------------------------------------------------------------


def parse_shard(value: str | Sequence[int] | None) -> tuple[int, int] | None:
    """`"1/4"` -> (1, 4); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
        if not m:
            raise UsageError(MSG_BAD_SHARD.format(value=value))
        i, n = int(m.group(1)), int(m.group(2))
    else:
        try:
            i, n = (int(v) for v in value)
        except (TypeError, ValueError):
            raise UsageError(MSG_BAD_SHARD.format(value=value)) from None
    if not 0 <= i < n:
        raise UsageError(MSG_BAD_SHARD.format(value=f"{i}/{n}" if not isinstance(value, str) else value))
    return i, n


def effective_shard(shard: tuple[int, int] | None) -> tuple[int, int]:
    """The shard this process works on.

    Under torchrun each rank takes its share automatically. Given both `--shard i/n` and a world of W ranks,
    rank r takes shard i + n*r of n*W: index j satisfies j mod nW == i + n*r exactly when j mod n == i and
    (j // n) mod W == r, so the ranks together cover shard i/n and nothing else.
    """
    i, n = shard or (0, 1)
    r, w = dist.rank(), dist.world_size()
    return i + n * r, n * w


def resolve_inputs(
    *, group: str, prompts: str | os.PathLike | None = None, task: str | None = None,
    run_dir: str | os.PathLike | None = None,
) -> tuple[Path, list[str]]:
    """The prompt file and group names for `--group G[,G2...]|all` with optional --prompts / --task.

    Without --prompts the file is `<run_dir>/prompts/<task>.yaml` or the shipped one; without --task the task
    is the one that has the named group (group names are unique across the built-in tasks).
    """
    names = [g.strip() for g in group.split(",") if g.strip()]
    if not names:
        raise UsageError(MSG_NO_GROUPS)
    if prompts is not None:
        path = Path(prompts)
        pf = load_prompt_file(path)
        if task is not None and pf.task.name != task:
            raise UsageError(MSG_TASK_MISMATCH.format(path=path, have=pf.task.name, want=task))
        task_groups = [g.name for g in pf.task.groups]
    else:
        if task is None:
            if "all" in names:
                raise UsageError(MSG_ALL_NEEDS_TASK)
            found = {task_for_group(name).name for name in names}
            if len(found) > 1:
                raise UsageError(MSG_MIXED_TASKS.format(groups=", ".join(names)))
            task = found.pop()
        path = find_prompt_file(task, run_dir)
        task_groups = [g.name for g in load_prompt_file(path).task.groups]
    return path, task_groups if names == ["all"] else names


def pick_prompt(prompts: Sequence[str], *, order: str, seed: int, group: str, index: int) -> str:
    """The prompt of image `index`: round-robin, or drawn with an RNG seeded from the image's own seed."""
    if order == "round-robin":
        return prompts[index % len(prompts)]
    return prompts[random.Random(image_seed(seed, group, index)).randrange(len(prompts))]


# ---- bookkeeping -----------------------------------------------------------------------------------------


def part_path(out: Path, group: str, shard: tuple[int, int]) -> Path:
    return out / PARTS_DIR / f"{group}.{shard[0]}-of-{shard[1]}.jsonl"


def read_part(path: Path) -> list[dict[str, Any]]:
    """Rows of one part file. A line that is not a complete JSON object (a kill -9 mid-write) is ignored."""
    rows = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                continue  # the unfinished last line of an interrupted write
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):  # not JSON, not UTF-8, a 5000-digit number, absurd nesting
                continue
            if isinstance(row, dict) and "group" in row and "index" in row:
                _check_part_row(path, number, row)
                rows.append(row)
    return rows


def _check_part_row(path: Path, line: int, row: dict[str, Any]) -> None:
    """The fields later code computes with: a hand-edited row is one clear line, not a traceback."""
    def bad(field: str, rule: str) -> DataError:
        value = json.dumps(row.get(field))
        return DataError(MSG_BAD_PART_ROW.format(path=path, line=line, field=field, rule=rule,
                                                 value=value if len(value) <= 40 else value[:37] + "..."))

    index = row["index"]
    if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 10**12):
        raise bad("index", "a whole number from 0")
    if not isinstance(row["group"], str):
        raise bad("group", "a group name")
    if not isinstance(row.get("file_name"), str):
        raise bad("file_name", "a file name")


def read_parts(out: Path, groups: set[str] | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """All rows of all part files (any shard layout), keyed by (group, index); later rows win."""
    parts = out / PARTS_DIR
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    if not parts.is_dir():
        return rows
    for path in sorted(parts.iterdir()):
        m = _PART_RE.match(path.name)
        if not m or (groups is not None and m.group("group") not in groups):
            continue
        for row in read_part(path):
            rows[(str(row["group"]), int(row["index"]))] = row
    return rows


@contextlib.contextmanager
def _append_rows(path: Path) -> Iterator[Any]:
    """Open a part file for appending, first cutting off an unfinished last line left by a kill -9."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_errors(path), open(path, "ab+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            start = max(0, size - 65536)  # a row is far shorter than this
            fh.seek(start)
            tail = fh.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                fh.truncate(start + cut + 1 if cut >= 0 else start)
        try:
            yield fh
        finally:
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on out/.lock (shards finishing at once take turns rebuilding the manifest)."""
    from filelock import FileLock

    with FileLock(out / LOCK_NAME):
        yield


def _remove_tmp(folder: Path, name: str) -> None:
    """Remove the temporary files an interrupted atomic write of `folder/name` left (call under out/.lock)."""
    for tmp in folder.glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Shards i/n and j/m share an index exactly when i and j agree modulo gcd(n, m) (Chinese remainders)."""
    g = math.gcd(a[1], b[1])
    return a[0] % g == b[0] % g


@contextlib.contextmanager
def job_lock(out: Path, shard: tuple[int, int]) -> Iterator[None]:
    """Hold out/.synth.<i>-of-<n>.lock for a whole run and refuse to start while a run of an overlapping shard
    holds its own; under torchrun only rank 0 locks (see the module docstring).

    The folder (and missing parents) is created for the lock; if this run created it and stops before writing
    anything else, it is removed again, so a refused option leaves no folder behind."""
    if dist.is_distributed() and not dist.is_main():
        yield
        return
    from filelock import FileLock, Timeout

    created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(MSG_CANNOT_CREATE.format(out=out, reason=exc.strerror or exc.__class__.__name__)) from None
    mine = out / JOB_LOCK.format(i=shard[0], n=shard[1])
    lock = FileLock(mine)
    failed = True
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UsageError(MSG_BUSY.format(out=out, lock=mine.name)) from None
        try:
            # Another shard layout (e.g. 0/2 while 0/1 runs) writes some of the same indices: probe its lock.
            for other in sorted(out.iterdir()):
                m = _JOB_LOCK_RE.match(other.name)
                if other == mine or not m or not _overlap(shard, (int(m["i"]), int(m["n"]))):
                    continue
                probe = FileLock(other)
                try:
                    probe.acquire(timeout=0)
                    probe.release()
                except Timeout:
                    raise UsageError(MSG_BUSY.format(out=out, lock=other.name)) from None
            yield
            failed = False
        finally:
            if created and failed:
                _undo_failed_start(out, mine)
            lock.release()
    finally:
        # Only a folder this run created and left holding nothing but its lock (another run may have just
        # created its own lock there: then the folder stays).
        if created and out.is_dir() and not any(p != mine for p in out.iterdir()):
            mine.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # stops at the first folder that is not empty
                for folder in created:
                    folder.rmdir()


def _undo_failed_start(out: Path, mine: Path) -> None:
    """A run that created `out` and failed before any image was finished (a file-size limit, a full disk on the
    first image) removes what it wrote there (config, part files, group folders): nothing half-done stays."""
    import shutil

    if any(out.rglob("*.png")) or any(_JOB_LOCK_RE.match(p.name) and p != mine for p in out.iterdir()):
        return
    for p in out.iterdir():
        if p != mine:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def remove_orphans(out: Path, groups: Sequence[str], shard: tuple[int, int]) -> int:
    """Delete the half-written temporary images a kill -9 left for this shard's indices; returns how many.

    Only this shard's indices: a concurrent run of another shard may be writing its own right now."""
    removed = 0
    for name in groups:
        folder = out / name
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            m = _IMAGE_TMP_RE.match(path.name)
            if m and int(m["index"]) % shard[1] == shard[0] and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("removed %d unfinished temporary images left by an interrupted run", removed)
    return removed


def rebuild_manifest(out: str | os.PathLike) -> tuple[Path, dict[str, int]]:
    """Write out/metadata.jsonl from every part file: one row per (group, index) whose image exists,
    sorted by group then index. Returns the path and the number of images per group."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        _remove_tmp(out, MANIFEST_NAME)  # left by a run killed while writing it
        rows = [r for r in read_parts(out).values() if (out / r["file_name"]).is_file()]
        rows.sort(key=lambda r: (str(r["group"]), int(r["index"])))
        path = write_manifest(out / MANIFEST_NAME, rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["group"]] = counts.get(r["group"], 0) + 1
    return path, counts


# ---- the stage -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    group: Group
    index: int
    prompt: str
    seed: int

    @property
    def file_name(self) -> str:
        return f"{self.group.name}/{self.index:06d}.png"


def _plan(
    pf: PromptFile, groups: Sequence[str], *, n: int, out: Path, seed: int, kind: str, order: str,
    shard: tuple[int, int], generator: str,
) -> tuple[list[_Job], int]:
    """The images this shard still has to make, and how many of its images are already done."""
    done = read_parts(out, set(groups))
    todo, skipped = [], 0
    for name in groups:
        group = pf.task.group(name)
        prompts = pf.prompts(name, kind=kind)
        for index in range(shard[0], n, shard[1]):
            job = _Job(group, index, pick_prompt(prompts, order=order, seed=seed, group=name, index=index),
                       image_seed(seed, name, index))
            row = done.get((name, index))
            if row is not None:
                _check_same(row, job, generator, out)
                if (out / job.file_name).is_file():
                    skipped += 1
                    continue
            todo.append(job)
    return todo, skipped


def _check_same(row: dict[str, Any], job: _Job, generator: str, out: Path) -> None:
    """Refuse to mix images made with other settings into one folder (a changed seed, prompt file or
    generator would otherwise leave a dataset that no single command reproduces)."""
    for what, have, want in (("seed", row.get("seed"), job.seed), ("prompt", row.get("prompt"), job.prompt),
                             ("generator", row.get("generator"), generator)):
        if have != want:
            raise UsageError(MSG_MISMATCH.format(out=out, file=job.file_name, what=what))


def _comparable(settings: dict[str, Any] | None) -> dict[str, Any]:
    # library versions may change between a run and its resume without changing what a seed gives
    return {k: v for k, v in (settings or {}).items() if not k.endswith("_version")}


def _check_settings(out: Path, settings: dict[str, Any], *, only_given: bool = False) -> None:
    """Refuse to add images made with other generator settings (size, model, steps, ...) to a folder that
    already holds images: the result would be a dataset that no single command reproduces."""
    import yaml

    saved_path = out / "synth.config.yaml"
    if not saved_path.is_file() or not read_parts(out):
        return
    saved = (yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}).get("synth", {}).get("generator_settings")
    if saved is None:
        return
    before, now = _comparable(saved), _comparable(settings)
    keys = (before.keys() & now.keys()) if only_given else (before.keys() | now.keys())  # only_given: the options asked
    changed = sorted(k for k in keys if before.get(k) != now.get(k))
    if changed:
        diffs = ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise UsageError(MSG_SETTINGS_CHANGED.format(out=out, diffs=diffs))


def _save(image: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _row(job: _Job, generator: str) -> dict[str, Any]:
    return {
        "file_name": job.file_name,
        "target": job.group.target,
        "protected": job.group.protected,
        "group": job.group.name,
        "prompt": job.prompt,
        "seed": job.seed,
        "generator": generator,
        "index": job.index,
    }


def _run(jobs: list[_Job], *, gen: Any, out: Path, shard: tuple[int, int], batch_size: int, progress: Progress) -> tuple[int, float]:
    """Generate `jobs` batch by batch; returns (images written, seconds)."""
    written, start = 0, time.perf_counter()
    with progress.task(f"synth {shard[0]}/{shard[1]}" if shard[1] > 1 else "synth", total=len(jobs)) as bar:
        by_group: dict[str, list[_Job]] = {}
        for job in jobs:
            by_group.setdefault(job.group.name, []).append(job)
        for name, group_jobs in by_group.items():
            with _append_rows(part_path(out, name, shard)) as part:
                for b in range(0, len(group_jobs), batch_size):
                    batch = group_jobs[b : b + batch_size]
                    images = gen.generate([ImageRequest(prompt=j.prompt, seed=j.seed, index=j.index) for j in batch])
                    if len(images) != len(batch):
                        raise GeneratorError(MSG_COUNT.format(name=gen.name, got=len(images), want=len(batch)))
                    for job, image in zip(batch, images):
                        _save(image, out / job.file_name)
                        # The row follows its image, and is flushed at once so a kill -9 loses at most the
                        # image being written (regenerated on resume); fsync once per batch is enough.
                        part.write((json.dumps(_row(job, gen.name), ensure_ascii=False) + "\n").encode("utf-8"))
                        part.flush()
                    os.fsync(part.fileno())
                    written += len(batch)
                    elapsed = time.perf_counter() - start
                    bar.advance(len(batch), **{"img/s": f"{written / elapsed:.1f}" if elapsed > 0 else "-"})
    return written, time.perf_counter() - start


def _finish(out: Path) -> tuple[Path, dict[str, int]]:
    """Rebuild the manifest once every process is done: under torchrun rank 0 does it after a barrier."""
    if not dist.is_distributed():
        return rebuild_manifest(out)
    dist.barrier()  # every rank's images and part files are in place
    result = rebuild_manifest(out) if dist.is_main() else (out / MANIFEST_NAME, {})
    dist.barrier()  # the others wait for the manifest, so every rank returns a finished folder
    return result


def synthesize(
    *,
    prompts: str | os.PathLike | PromptFile,
    groups: Sequence[str],
    n: int,
    out: str | os.PathLike,
    generator: str = SynthConfig.generator,
    generator_options: dict[str, Any] | None = None,
    seed: int = SynthConfig.seed,
    batch_size: int = SynthConfig.batch_size,
    prompt_kind: str = SynthConfig.prompt_kind,
    prompt_order: str = SynthConfig.prompt_order,
    shard: tuple[int, int] | str | None = None,
    progress: Progress = NULL,
) -> SynthResult:
    """Make images 0..n-1 of each group (this process's shard of them) and rebuild out/metadata.jsonl."""
    pf = prompts if isinstance(prompts, PromptFile) else load_prompt_file(prompts)
    if n < 1:
        raise UsageError(MSG_BAD_N.format(n=n))
    if batch_size < 1:
        raise UsageError(MSG_BAD_BATCH.format(value=batch_size))
    if prompt_kind not in PROMPT_KINDS:
        raise UsageError(MSG_BAD_KIND.format(value=prompt_kind))
    if prompt_order not in PROMPT_ORDERS:
        raise UsageError(MSG_BAD_ORDER.format(value=prompt_order))
    if not groups:
        raise UsageError(MSG_NO_GROUPS)
    groups = list(dict.fromkeys(groups))
    for name in groups:
        pf.prompts(name, kind=prompt_kind)  # unknown group or no prompts -> a clear error before any work
    out = Path(out)
    asked = parse_shard(shard) or (0, 1)
    mine = effective_shard(asked)
    check_outputs({"the manifest": out / MANIFEST_NAME, "the resolved config": out / "synth.config.yaml"},
                  {"--prompts": None if isinstance(prompts, PromptFile) else prompts}, folders={"--out": out})
    with job_lock(out, asked):
        return _synthesize(pf, prompts=prompts, groups=groups, n=n, out=out, generator=generator,
                           generator_options=generator_options, seed=seed, batch_size=batch_size,
                           prompt_kind=prompt_kind, prompt_order=prompt_order, shard=shard, mine=mine,
                           progress=progress)


def run_synth(cfg: Any, *, progress: Progress = NULL) -> tuple[SynthResult, Path, list[str]]:
    """`aimfair synth` from its options (a `SynthConfig`): (result, the prompt file used, the groups)."""
    if not cfg.group:
        raise UsageError(MSG_NO_GROUP)
    if cfg.n is None:
        raise UsageError(MSG_NO_N)
    prompt_file, groups = resolve_inputs(group=cfg.group, prompts=cfg.prompts, task=cfg.task)
    result = synthesize(prompts=prompt_file, groups=groups, n=cfg.n, out=cfg.out, generator=cfg.generator,
                        generator_options={k: getattr(cfg, k) for k in GENERATOR_OPTIONS if getattr(cfg, k) is not None},
                        seed=cfg.seed, batch_size=cfg.batch_size, prompt_kind=cfg.prompt_kind,
                        prompt_order=cfg.prompt_order, shard=cfg.shard, progress=progress)
    return result, prompt_file, groups


def _synthesize(pf: PromptFile, *, prompts: Any, groups: list[str], n: int, out: Path, generator: str,
                generator_options: dict[str, Any] | None, seed: int, batch_size: int, prompt_kind: str,
                prompt_order: str, shard: Any, mine: tuple[int, int], progress: Progress) -> SynthResult:
    """The run itself, under the job lock."""
    remove_orphans(out, groups, mine)
    todo, skipped = _plan(pf, groups, n=n, out=out, seed=seed, kind=prompt_kind, order=prompt_order,
                          shard=mine, generator=generator)
    written, seconds, settings = 0, 0.0, None
    try:
        if todo:
            # Built only when there is work: loading a diffusion model takes a while.
            gen = make_generator(generator, **(generator_options or {}))
            settings = gen.describe()
            _check_settings(out, settings)
            out.mkdir(parents=True, exist_ok=True)  # job_lock removes it again if nothing gets written
            log.info("shard %d/%d: %d images to make, %d already present", mine[0], mine[1], len(todo), skipped)
            _write_config(out, prompts=prompts, pf=pf, groups=groups, n=n, generator=generator,
                          generator_options=generator_options, settings=settings, seed=seed, batch_size=batch_size,
                          prompt_kind=prompt_kind, prompt_order=prompt_order, shard=shard)
            written, seconds = _run(todo, gen=gen, out=out, shard=mine, batch_size=batch_size, progress=progress)
        else:  # nothing to make: still, a rerun at another --size (or model) must not pass for one that is done
            _check_settings(out, {"generator": generator, **{k: v for k, v in (generator_options or {}).items()
                                                              if v is not None}}, only_given=True)
    except KeyboardInterrupt:
        if not dist.is_distributed() and (out / PARTS_DIR).is_dir():
            rebuild_manifest(out)  # the manifest lists what is on disk; a rerun continues
        raise
    manifest, present = _finish(out)
    if settings is None and not (out / "synth.config.yaml").exists() and dist.is_main():
        _write_config(out, prompts=prompts, pf=pf, groups=groups, n=n, generator=generator,
                      generator_options=generator_options, settings=None, seed=seed, batch_size=batch_size,
                      prompt_kind=prompt_kind, prompt_order=prompt_order, shard=shard)
    job_shard = mine
    if dist.is_distributed():  # under torchrun the result describes the whole job, not this rank's share
        counts = dist.all_gather_object((written, skipped, seconds))
        written, skipped = sum(c[0] for c in counts), sum(c[1] for c in counts)
        seconds = max(c[2] for c in counts)
        job_shard = parse_shard(shard) or (0, 1)
    return SynthResult(out=out, manifest=manifest, shard=job_shard, written=written, skipped=skipped,
                       seconds=seconds, present=present)


def _write_config(out: Path, *, prompts: Any, pf: PromptFile, settings: dict[str, Any] | None, **options: Any) -> None:
    from ..core.config import write_resolved_config

    if not dist.is_main():
        return
    shard = options.pop("shard")
    config = {
        "prompts": str(prompts) if not isinstance(prompts, PromptFile) else f"<{pf.task.name} prompts in memory>",
        "task": pf.task.name,
        **options,
        "generator_options": dict(options.get("generator_options") or {}),
        "shard": None if shard is None else "/".join(str(v) for v in parse_shard(shard) or ()),
        "generator_settings": settings,
    }
    with _locked(out):  # runs of other shards write it too
        _remove_tmp(out, "synth.config.yaml")
        write_resolved_config(out, "synth", config)
