"""Steps as data, run with one reuse rule, and the shell commands that do the same.

A `Step` is a stage command, its options dataclass (the resolved config), the files it reads and the files or
folders it writes. `Pipeline.run(step)` calls the stage's library function (`RUNNERS`) and, after it succeeds,
records beside the step's first output, in `<output>.step.json`, what made it: the command line (the flags of the
config, `options.to_argv`), a fingerprint of every input, and the fingerprint of any code that decides the output
without being an option (the demo renderer). One rule decides reuse: a step is skipped exactly when its outputs
exist and that record matches. An input written by an earlier step is fingerprinted by that step's record (so a
rerun upstream makes everything downstream stale, whatever the bytes), any other input by its SHA-256.

A step that is not reused owns its outputs: they are removed before it runs, so a stale folder never mixes with
new files. `commands()` are the same steps as shell lines: commands.sh can never disagree with what ran.

In plan mode (`Pipeline(..., plan=True)`) nothing runs: steps are only counted, reused where their record matches,
to estimate the work before it starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shlex
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.fsio import atomic_write_text
from ..core.options import to_argv
from ..core.progress import NULL, Progress
from ..core.provenance import sha256_file

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".step.json"
TRAINING = {("pretrain",), ("finetune",)}  # the steps the estimate counts as trainings


@dataclass
class Step:
    command: tuple[str, ...]  # ("pretrain",), ("data", "demo")
    cfg: Any  # the command's options dataclass, resolved
    inputs: tuple[Path, ...]
    outputs: tuple[Path, ...]  # the record lies beside outputs[0]
    title: str
    cost: float = 1.0  # image passes, for the progress bar and the estimate
    code: dict[str, str] = field(default_factory=dict)  # fingerprints of code that decides the outputs

    def argv(self, base: Path) -> list[str]:
        return ["aimfair", *self.command, *to_argv(self.cfg, base=base)]


def record_path(output: Path) -> Path:
    return output.with_name(output.name + RECORD_SUFFIX)


def _run_data_demo(cfg: Any, progress: Progress) -> Any:
    from ..data.demo import make_demo_dataset

    return make_demo_dataset(progress=progress, **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})


def _runners() -> dict[tuple[str, ...], Callable[[Any, Progress], Any]]:
    from ..data.compose import compose_manifest
    from ..stages.evaluate import run_eval
    from ..stages.finetune import run_finetune
    from ..stages.mask import run_mask
    from ..stages.pretrain import run_pretrain
    from ..stages.prompts import run_prompts
    from ..stages.synth import run_synth

    return {
        ("data", "demo"): _run_data_demo,
        ("data", "compose"): lambda cfg, progress: compose_manifest(cfg),
        ("prompts",): lambda cfg, progress: run_prompts(cfg, progress=progress),
        ("synth",): lambda cfg, progress: run_synth(cfg, progress=progress),
        ("pretrain",): lambda cfg, progress: run_pretrain(cfg, progress=progress),
        ("mask",): lambda cfg, progress: run_mask(cfg, progress=progress),
        ("finetune",): lambda cfg, progress: run_finetune(cfg, progress=progress),
        ("eval",): lambda cfg, progress: run_eval(cfg, progress=progress),
    }


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Pipeline:
    """Runs steps in order with the reuse rule; keeps their shell commands."""

    def __init__(self, root: Path, *, progress: Progress = NULL, plan: bool = False,
                 advance: Callable[[float, str], None] | None = None) -> None:
        self.root, self.progress, self.plan = Path(root).resolve(), progress, plan
        self.advance = advance or (lambda cost, title: None)
        self.steps: list[Step] = []
        self.ran: list[Step] = []
        self.reused: list[Step] = []
        self._digests: dict[Path, str | None] = {}  # output -> its step's digest (None: will run, plan mode)
        self._seen: dict[Path, Any] = {}  # first output -> its key, for steps already handled in this run

    # ---- fingerprints -------------------------------------------------------------------------------------------

    def _producer(self, path: Path) -> Path | None:
        for out in self._digests:
            if path == out or out in path.parents:
                return out
        return None

    def fingerprint(self, path: Path) -> str | None:
        """"step:<digest>" for a file an earlier step wrote (None while that step is still to run, in plan mode),
        "sha256:<hex>" for any other file."""
        path = Path(path).resolve()
        producer = self._producer(path)
        if producer is not None:
            digest = self._digests[producer]
            return None if digest is None else f"step:{digest}"
        return f"sha256:{sha256_file(path)}" if path.is_file() else "missing"  # memoised by size and mtime

    def pending(self, path: Path) -> bool:
        """In plan mode: whether `path` is written by a step that is still to run (so it cannot be read yet)."""
        producer = self._producer(Path(path).resolve())
        return producer is not None and self._digests[producer] is None

    def key(self, step: Step) -> dict[str, Any] | None:
        """What the record must hold for `step` to be reused (None: an input is not made yet, in plan mode)."""
        inputs = {}
        for path in step.inputs:
            fp = self.fingerprint(path)
            if fp is None:
                return None
            inputs[self.rel(path)] = fp
        return {"command": step.argv(self.root), "inputs": inputs, "code": dict(step.code)}

    def rel(self, path: Path) -> str:
        path = Path(path).resolve()
        return str(path.relative_to(self.root)) if self.root in path.parents or path == self.root else str(path)

    # ---- running ------------------------------------------------------------------------------------------------

    def reusable(self, step: Step, key: dict[str, Any] | None) -> str | None:
        """The recorded digest when `step` can be skipped, else None."""
        record = record_path(step.outputs[0])
        if key is None or not record.is_file() or not all(p.exists() for p in step.outputs):
            return None
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return saved.get("digest") if {k: saved.get(k) for k in key} == key else None

    def run(self, step: Step) -> bool:
        """Run `step` unless its record says its outputs are current; True when it ran (or would run)."""
        outputs = tuple(Path(p).resolve() for p in step.outputs)
        step = dataclasses.replace(step, outputs=outputs)
        key = self.key(step)
        if outputs[0] in self._seen:  # shared by several rows or studies: handled once per run
            if self._seen[outputs[0]] != key:
                raise RuntimeError(f"two different steps write {outputs[0]}")  # a bug in a study's definition
            return False
        self._seen[outputs[0]] = key
        self.steps.append(step)
        digest = self.reusable(step, key)
        if digest is not None:
            self.reused.append(step)
            self._digests.update({p: digest for p in outputs})
            log.info("%s: reused", step.title)
            self.advance(step.cost, step.title)
            return False
        self.ran.append(step)
        if self.plan:
            self._digests.update({p: None for p in outputs})
            return True
        record = record_path(outputs[0])
        for path in (record, *outputs):  # the step owns its outputs: nothing stale survives next to new files
            _remove(path)
        started = time.perf_counter()
        _runners()[step.command](step.cfg, self.progress)
        key = self.key(step)  # inputs are files that exist now
        # a fresh digest per run, not a function of the key: whatever a rerun wrote, what reads it is stale
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode() + uuid.uuid4().bytes).hexdigest()
        atomic_write_text(record, json.dumps({**key, "digest": digest}, indent=1) + "\n")
        self._digests.update({p: digest for p in outputs})
        log.info("%s: done in %.0fs", step.title, time.perf_counter() - started)
        self.advance(step.cost, step.title)
        return True

    def commands(self) -> list[str]:
        """Every step as a shell line, in order, deduplicated (a step several studies share runs once)."""
        lines: list[str] = []
        for step in self.steps:
            line = shlex.join(step.argv(self.root))
            if line not in lines:
                lines.append(line)
        return lines

    def write_commands(self, path: Path, header: str) -> Path:
        text = "#!/usr/bin/env bash\n" + "".join(f"# {h}\n" for h in header.splitlines())
        text += 'set -euo pipefail\ncd "$(dirname "$0")"\n' + "\n".join(self.commands()) + "\n"
        atomic_write_text(path, text)
        path.chmod(0o755)
        return path
