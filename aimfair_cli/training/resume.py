"""Resumable training state: written after every epoch beside the output, read by `--resume`.

`<out stem>.resume.safetensors` holds everything the next epoch depends on — the model (BatchNorm statistics
included), the best state so far, the optimizer's per-tensor state (momentum buffers), the scheduler, the AMP
loss scaler, the Python/NumPy/torch random states, the epoch, the best epoch and accuracy, the history — and
the resolved config of the run. Tensors are safetensors (no pickle, like every file aimfair reads); the rest is
JSON in the metadata. It is written atomically, so a kill at any moment leaves the previous epoch's state or the
new one. The loaders draw their order and crops from (seed, epoch), so a run resumed after epoch k reads exactly
what the uninterrupted run reads from epoch k + 1 on: on the same machine the weights end bit-identical.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UsageError
from ..core.fsio import atomic_path

if TYPE_CHECKING:
    import torch

FORMAT = 1
META_KEY = "aimfair_resume"
IGNORED = ("epochs", "resume", "keep_state")  # options a resumed run may change

MSG_NO_STATE = "--resume: no resumable state at {path} (it is written after each epoch and removed when a run ends)"
MSG_BAD_STATE = "--resume: {path} is not a resumable state written by aimfair"
MSG_EPOCHS_DONE = ("--resume: the run at {path} has already trained {done} epochs; --epochs {epochs} is fewer (give "
                   "--epochs {done} or more)")
MSG_NOT_FINITE_STATE = "--resume: {path} holds non-finite weights ({which}); start the run again without --resume"
MSG_CONFIG_CHANGED = ("--resume: the run at {path} was started with {what}; resume with the same options (only "
                      "--epochs may change)")


def state_path_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".resume.safetensors")


def history_path_for(out: str | os.PathLike) -> Path:
    """`<out stem>.history.csv`: one row per epoch, appended (and flushed) as each epoch ends."""
    out = Path(out)
    return out.with_name(out.stem + ".history.csv")


@dataclass
class Resumable:
    """What `fit` needs to save and resume: where, the run's resolved config (JSON-able), and whether to load."""

    path: Path
    config: dict[str, Any]
    resume: bool = False
    history: Path | None = None  # the per-epoch history file, appended as each epoch ends


@dataclass
class TrainState:
    epoch: int
    best_epoch: int
    best_acc: float
    history: list[dict[str, Any]]
    model: dict[str, "torch.Tensor"]
    best: dict[str, "torch.Tensor"]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, "torch.Tensor"] = field(default_factory=dict)  # a method's own state (methods/)


def _cpu(t: "torch.Tensor") -> "torch.Tensor":
    return t.detach().to("cpu").contiguous()


def _rng_state() -> tuple[dict[str, Any], dict[str, "torch.Tensor"]]:
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": [version, list(internal), gauss], "numpy": [name, int(pos), int(has_gauss), float(cached)]}
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return meta, tensors


def _set_rng_state(meta: dict[str, Any], tensors: dict[str, "torch.Tensor"]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])


def _json_safe(x: Any) -> Any:
    """Scheduler/scaler state dicts as JSON (Counters and int keys become plain dicts with string keys)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def save_state(path: Path, *, config: dict[str, Any], model, optimizer, scheduler, scaler, epoch: int,
               best_state: dict[str, "torch.Tensor"], best_epoch: int, best_acc: float,
               history: list[dict[str, Any]], extra: dict[str, "torch.Tensor"] | None = None) -> None:
    from safetensors.torch import save_file

    from .checkpoint import state_tensors

    tensors: dict[str, torch.Tensor] = {}
    for k, v in state_tensors(model).items():
        tensors[f"model.{k}"] = v
    for k, v in best_state.items():
        tensors[f"best.{k}"] = _cpu(v)
    opt = optimizer.state_dict()
    opt_meta: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
    for i, st in opt["state"].items():
        entry = {}
        for name, value in st.items():
            if hasattr(value, "detach"):
                tensors[f"optim.{i}.{name}"] = _cpu(value)
                entry[name] = {"tensor": True}
            else:
                entry[name] = {"value": value}
        opt_meta["state"][str(i)] = entry
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = _cpu(v)
    rng_meta, rng_tensors = _rng_state()
    tensors.update(rng_tensors)
    meta = {
        "format": FORMAT, "config": config, "epoch": epoch, "best_epoch": best_epoch,
        "best_acc": None if not math.isfinite(best_acc) else best_acc, "history": history,
        "optimizer": opt_meta, "scheduler": _json_safe(scheduler.state_dict()),
        "scaler": None if scaler is None else _json_safe(scaler.state_dict()), "rng": rng_meta,
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})


def load_state(path: Path) -> tuple[TrainState, dict[str, Any]]:
    """The state at `path` and its config; UsageError when there is none or it is not ours."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..core.errors import CheckpointError
    from .checkpoint import _read_header

    if not path.is_file():
        raise UsageError(MSG_NO_STATE.format(path=path))
    try:
        header = _read_header(path)  # refuses anything that is not a safetensors file before it is parsed
        meta = json.loads(header.get("__metadata__", {}).get(META_KEY, "null"))
        tensors = load_file(str(path))
    except (CheckpointError, SafetensorError, ValueError, OSError, RecursionError):
        raise UsageError(MSG_BAD_STATE.format(path=path)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(MSG_BAD_STATE.format(path=path))
    _refuse_non_finite(path, tensors)
    opt_state = {}
    for i, entry in meta["optimizer"]["state"].items():
        opt_state[int(i)] = {name: tensors[f"optim.{i}.{name}"] if v.get("tensor") else v["value"]
                             for name, v in entry.items()}
    scheduler = dict(meta["scheduler"])
    if "milestones" in scheduler:  # MultiStepLR keeps a Counter of int epochs
        from collections import Counter

        scheduler["milestones"] = Counter({int(k): v for k, v in scheduler["milestones"].items()})
    state = TrainState(
        epoch=int(meta["epoch"]), best_epoch=int(meta["best_epoch"]),
        best_acc=math.nan if meta["best_acc"] is None else float(meta["best_acc"]), history=meta["history"],
        model={k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
        best={k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")},
        optimizer={"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]},
        scheduler=scheduler, scaler=meta["scaler"],
        rng={"meta": meta["rng"], "tensors": {k: v for k, v in tensors.items() if k.startswith("rng.")}},
        extra={k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")},
    )
    return state, meta["config"]


def _refuse_non_finite(path: Path, tensors: dict[str, "torch.Tensor"]) -> None:
    """A state whose weights (current or best copy) hold NaN or inf would be written out as the final model."""
    import torch

    for prefix, which in (("best.", "the best copy"), ("model.", "the current weights")):
        for k, v in tensors.items():
            if k.startswith(prefix) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise UsageError(MSG_NOT_FINITE_STATE.format(path=path, which=f"{which}, {k[len(prefix):]}"))


def read_config(path: Path) -> dict[str, Any]:
    """The resolved config a state was written with, from its header alone."""
    return _read_meta(path)["config"]


def _read_meta(path: Path) -> dict[str, Any]:
    """The state's JSON metadata (config, epoch, history), from its header alone."""
    from ..core.errors import CheckpointError
    from .checkpoint import _read_header

    if not path.is_file():
        raise UsageError(MSG_NO_STATE.format(path=path))
    try:
        meta = json.loads(_read_header(path).get("__metadata__", {}).get(META_KEY, "null"))
    except (CheckpointError, ValueError, OSError, RecursionError):
        raise UsageError(MSG_BAD_STATE.format(path=path)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict) \
            or not isinstance(meta.get("epoch"), int):
        raise UsageError(MSG_BAD_STATE.format(path=path))
    return meta


def prepare(out: str | os.PathLike, config: Any, *, resume: bool) -> Resumable:
    """Before any work: the state's path for `out`; with resume, the state must exist and match `config`."""
    import logging

    from ..core.config import to_json

    path = state_path_for(out)
    current = json.loads(to_json(config))
    if resume:
        meta = _read_meta(path)
        check_config(path, meta["config"], current)
        epochs = current.get("epochs")
        if isinstance(epochs, int) and epochs < meta["epoch"]:
            raise UsageError(MSG_EPOCHS_DONE.format(path=path, done=meta["epoch"], epochs=epochs))
    elif path.exists():
        logging.getLogger(__name__).warning("%s holds the state of an unfinished run: starting over (--resume "
                                            "continues it)", path)
    return Resumable(path=path, config=current, resume=resume, history=history_path_for(out))


def stage_resumable(main: Resumable, stage: str, *, resume: bool) -> Resumable:
    """The state of an earlier training stage of the same run (a method's reference model, methods/), beside the
    main state: `<out stem>.<stage>.resume.safetensors`. With `resume` it continues where that state exists (a
    stage that had finished resumes to its end at once) and starts the stage over where none was written."""
    path = main.path.with_name(main.path.name.replace(".resume.safetensors", f".{stage}.resume.safetensors"))
    resume = resume and path.is_file()
    if resume:
        check_config(path, read_config(path), main.config)
    return Resumable(path=path, config=main.config, resume=resume)


def finish(resumable: Resumable, *, keep: bool) -> None:
    """After the output is written: remove the state unless asked to keep it."""
    if not keep:
        resumable.path.unlink(missing_ok=True)


def check_config(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume under other options than the run was started with (the epoch count aside)."""
    keys = sorted((set(saved) | set(current)) - set(IGNORED))
    changed = [k for k in keys if saved.get(k) != current.get(k)]
    if changed:
        what = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} (now {current.get(k)!r})" for k in changed[:3])
        raise UsageError(MSG_CONFIG_CHANGED.format(path=path, what=what))


def restore(state: TrainState, *, model, optimizer, scheduler, scaler) -> None:
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    if scaler is not None and state.scaler is not None:
        scaler.load_state_dict(state.scaler)
    _set_rng_state(state.rng["meta"], state.rng["tensors"])
