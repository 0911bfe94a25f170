"""Training in named phases, shared by `pretrain` and `finetune`:

  seed_everything -> fit( train_one_epoch + predict on val, per epoch ) -> FitResult (best state by val acc)

Loss is BCEWithLogits on one logit; a prediction is positive when sigmoid(logit) > 0.5. On CUDA, AMP (fp16
autocast + GradScaler) and channels_last are on by default; under torchrun the model is wrapped in
DistributedDataParallel. The same code runs single-process on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..core import dist
from ..core.errors import TrainingError, UsageError
from ..core.progress import NULL, Progress
from .images import batches, set_epoch
from .modelselect import selection_score

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn

    from .resume import Resumable

log = logging.getLogger(__name__)

BN_MODES = ("update", "freeze")
SYNC_EVERY = 25  # on CUDA, batches between reads of the loss (each read waits for the GPU)

MSG_BAD_BN = "--bn must be one of {modes}; got '{bn}'"
MSG_UNKNOWN_TRAINABLE = "trainable names not in the model: {names}"
MSG_NOTHING_TRAINABLE = "no parameter tensor is trainable: nothing to fine-tune"
MSG_NON_FINITE_SCORES = ("{what} gives non-finite scores (NaN or inf) for {n} of {total} images: its weights are "
                         "degenerate (a NaN weight, a negative BatchNorm variance); no metric is computed from them")
MSG_BAD_EPOCHS = "epochs must be at least 1; got {epochs}"
MSG_LOSS_NOT_FINITE = (
    "{description}: the training loss became {value} in epoch {epoch}{where}; stopped, no checkpoint written "
    "(try a lower --lr)"
)
MSG_WEIGHTS_NOT_FINITE = (
    "{description}: weights became NaN or infinite in epoch {epoch} (tensor '{name}'); stopped, no checkpoint "
    "written (try a lower --lr)"
)


@dataclass
class OptimConfig:
    """SGD + MultiStepLR, the paper's recipe (momentum 0.9, weight decay 1e-4, x0.1 at the milestones)."""

    lr: float
    epochs: int
    milestones: tuple[int, ...] = (10,)
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4


@dataclass
class Predictions:
    """Per-image outputs, ordered by dataset index."""

    scores: "np.ndarray"  # [N] float, sigmoid of the logit
    targets: "np.ndarray"  # [N] int
    protected: "np.ndarray"  # [N] int, -1 where unknown
    indices: "np.ndarray"  # [N] int, row index in the manifest
    features: "np.ndarray | None" = None  # [N, D] float, the last layer's inputs (`predict(features=True)`)

    @property
    def preds(self) -> "np.ndarray":
        return (self.scores > 0.5).astype("int64")

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.targets).mean()) if len(self.targets) else float("nan")


HISTORY_COLUMNS = ("epoch", "lr", "loss", "acc", "val_acc", "val_wst", "val_eo", "img_s", "seconds")


def _history_cells(row: dict[str, Any]) -> list[Any]:
    values = [row.get(k) for k in HISTORY_COLUMNS]
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else
            (f"{v:.6g}" if isinstance(v, float) else v) for v in values]


def start_history(path: "str | os.PathLike", history: list[dict[str, Any]]) -> None:
    """Write the history file anew with the rows so far (none, or a resumed state's): a resumed run continues it
    without repeating a row, whatever the kill left in the file."""
    import csv

    from ..core.fsio import atomic_open

    with atomic_open(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(HISTORY_COLUMNS)
        writer.writerows(_history_cells(row) for row in history)


def append_history(path: "str | os.PathLike", row: dict[str, Any]) -> None:
    """One epoch's row, flushed to disk at once (`tail -f` follows a run; a killed run keeps its epochs)."""
    import csv

    from ..core.fsio import write_errors

    with write_errors(path), open(path, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(_history_cells(row))
        fh.flush()
        os.fsync(fh.fileno())


def write_history(out: "str | os.PathLike", history: list[dict[str, Any]]) -> "Path":
    """`<out stem>.history.csv` beside a checkpoint: one row per epoch (HISTORY_COLUMNS; empty where unknown)."""
    from .resume import history_path_for

    path = history_path_for(out)
    start_history(path, history)
    return path


@dataclass
class FitResult:
    best_state: dict[str, "torch.Tensor"]  # CPU copies of state_dict() at the best epoch
    best_epoch: int  # 1-based
    best_val_acc: float
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = math.nan  # the `select` criterion's value at the best epoch
    select: str = "overall"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). Same seed + same data on CPU -> same weights."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: "torch.device", amp: bool):
    import contextlib

    import torch

    if not amp:
        return contextlib.nullcontext()
    # fp16 on CUDA (with GradScaler); bf16 on CPU, which needs no scaler.
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _set_train_mode(model: "nn.Module", frozen_bn: list["nn.Module"]) -> None:
    model.train()
    for m in frozen_bn:
        m.eval()  # running stats of frozen BN layers stay as they are


def train_one_epoch(
    model: "nn.Module",
    loader: Any,
    optimizer: "torch.optim.Optimizer",
    *,
    device: "torch.device | str",
    amp: bool,
    task: Any = None,
    scaler: "torch.amp.GradScaler | None" = None,
    channels_last: bool = False,
    frozen_bn: list["nn.Module"] | tuple = (),
    epoch: int = 1,
    description: str = "train",
    objective: Any = None,
) -> dict[str, float]:
    """One pass over `loader`. Returns the mean loss and accuracy over the images seen (all ranks).

    objective: None trains on the mean BCE loss (ERM); a debiasing method (`aimfair_cli/methods/`) passes an
    object whose `loss(images, logits, targets, protected, idx)` returns the batch's loss instead.

    A non-finite loss raises TrainingError at once in a single process; under torchrun the ranks agree on it
    at the end of the epoch (through the summed loss), so no rank waits forever for one that stopped.
    """
    import torch

    device = torch.device(device)
    _set_train_mode(model, list(frozen_bn))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # [loss sum, correct, n]
    single = not dist.is_distributed()
    # Reading a value back waits for the device: on CUDA only every SYNC_EVERY batches, so the host can queue
    # the next batches while the GPU works. The loss is still checked on the batch where it turns non-finite
    # on CPU, and within SYNC_EVERY batches on CUDA.
    sync_every = SYNC_EVERY if device.type == "cuda" else 1
    started = time.perf_counter()
    for batch, (images, targets, protected, idx) in enumerate(batches(loader), 1):
        images = images.to(device, non_blocking=True, memory_format=fmt)  # [B,3,H,W]
        targets = targets.to(device, non_blocking=True)  # [B]
        with autocast(device, amp):
            logits = model(images).squeeze(1)  # [B]
            if objective is None:
                loss = loss_fn(logits.float(), targets)
            else:
                loss = objective.loss(images, logits.float(), targets, protected, idx)
        synced = batch % sync_every == 0 or batch == 1
        if single and synced and not math.isfinite(loss.item()):
            raise TrainingError(MSG_LOSS_NOT_FINITE.format(description=description, value=loss.item(), epoch=epoch,
                                                           where=f", batch {batch}"))
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            b = targets.numel()
            correct = ((logits > 0).float() == targets).sum()
            totals += torch.stack([loss.detach().double() * b, correct.double(), torch.tensor(b, device=device).double()])
        if task is not None:
            if synced:
                seen = totals[2].item()
                task.advance(1, loss=f"{loss.item():.3f}", acc=f"{correct.item() / b:.3f}",
                             **{"img/s": f"{seen * dist.world_size() / max(time.perf_counter() - started, 1e-9):.0f}"})
            else:
                task.advance(1)
    dist.all_reduce_sum(totals)
    loss_sum, correct, n = totals.tolist()
    if not math.isfinite(loss_sum):
        raise TrainingError(MSG_LOSS_NOT_FINITE.format(description=description, value=loss_sum, epoch=epoch, where=""))
    return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "n": n}


def first_non_finite(model: "nn.Module") -> str | None:
    """The name of the first parameter or float buffer (BN running statistics) holding NaN or inf, else None."""
    import torch

    with torch.no_grad():
        for name, t in (*model.named_parameters(), *model.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return name
    return None


def _gather(parts: list["np.ndarray"]) -> list["np.ndarray"]:
    """Under torchrun, concatenate every rank's arrays (each rank saw its own shard)."""
    import numpy as np

    if not dist.is_distributed():
        return parts
    everyone = dist.all_gather_object(parts)
    return [np.concatenate([p[i] for p in everyone]) for i in range(len(parts))]


def predict(model: "nn.Module", loader: Any, *, device: "torch.device | str", amp: bool = False, task: Any = None,
            channels_last: bool = False, what: str = "the model", features: bool = False) -> Predictions:
    """Scores for every image in `loader`, in eval mode, sorted by dataset index (duplicates that
    DistributedSampler pads with are dropped). Under torchrun every rank returns all predictions. A score that is
    not finite is a CheckpointError naming `what`: a NaN never becomes a prediction, hence never a metric.
    features=True also keeps each image's input to the last layer (`model.fc`), in float32."""
    import numpy as np
    import torch

    device = torch.device(device)
    was_training = model.training
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    scores, targets, protected, indices, feats = [], [], [], [], []
    hook = model.fc.register_forward_hook(lambda m, inp, out: feats.append(inp[0].float().cpu().numpy())) \
        if features else None
    try:
        with torch.inference_mode():
            for images, y, s, idx in batches(loader):
                images = images.to(device, non_blocking=True, memory_format=fmt)  # [B,3,H,W]
                with autocast(device, amp):
                    logits = model(images).squeeze(1)  # [B]
                scores.append(torch.sigmoid(logits.float()).cpu().numpy())
                targets.append(np.asarray(y).astype(np.int64))
                protected.append(np.asarray(s).astype(np.int64))
                indices.append(np.asarray(idx).astype(np.int64))
                if task is not None:
                    task.advance(1)
    finally:
        model.train(was_training)
        if hook is not None:
            hook.remove()
    kept = [(scores, np.float32), (targets, np.int64), (protected, np.int64), (indices, np.int64)]
    cat = [np.concatenate(a) if a else np.zeros(0, dtype=dt) for a, dt in kept + [(feats, np.float32)] * features]
    cat = _gather(cat)
    _, first = np.unique(cat[3], return_index=True)  # sorted unique indices
    bad = int((~np.isfinite(cat[0][first])).sum())
    if bad:
        from ..core.errors import CheckpointError

        raise CheckpointError(MSG_NON_FINITE_SCORES.format(what=what, n=bad, total=len(first)))
    return Predictions(*(a[first] for a in cat))


def _frozen_batchnorms(model: "nn.Module", trainable: set[str]) -> list["nn.Module"]:
    from torch import nn

    frozen = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            prefix = f"{name}." if name else ""
            if f"{prefix}weight" not in trainable and f"{prefix}bias" not in trainable:
                frozen.append(m)
    return frozen


def _epoch(net, model, train_loader, val_loader, optimizer, *, epoch, optim, device, amp, scaler, channels_last,
           frozen_bn, progress, description, objective=None, select="overall") -> tuple[dict[str, float], float, float]:
    """One epoch of fit: train on `net` (maybe DDP-wrapped), then val accuracy (and WST/EO where the val set has
    group labels) of the plain `model`. Returns (training stats with img/s and seconds, val acc, lr)."""
    for loader in (train_loader, val_loader):
        if loader is not None:
            set_epoch(loader, epoch)  # a new shuffle and new crops each epoch
    lr = optimizer.param_groups[0]["lr"]
    started = time.perf_counter()
    with progress.task(f"{description} epoch {epoch}/{optim.epochs}", total=len(train_loader)) as task:
        stats = train_one_epoch(net, train_loader, optimizer, device=device, amp=amp, task=task, scaler=scaler,
                                channels_last=channels_last, frozen_bn=frozen_bn, epoch=epoch, description=description,
                                objective=objective)
    stats["seconds"] = time.perf_counter() - started
    stats["img_s"] = stats["n"] / max(stats["seconds"], 1e-9)
    bad = first_non_finite(model)  # under DDP every rank holds the same weights, so all ranks agree
    if bad is not None:
        raise TrainingError(MSG_WEIGHTS_NOT_FINITE.format(description=description, epoch=epoch, name=bad))
    val_acc = math.nan
    if val_loader is not None:
        preds = predict(model, val_loader, device=device, amp=amp, channels_last=channels_last)
        val_acc = preds.accuracy
        stats.update(_val_fairness(preds))
        stats["val_score"] = selection_score(preds, select)
    return stats, val_acc, lr


def _val_fairness(preds: Predictions) -> dict[str, float]:
    """Validation WST and EO when every validation image has a protected label and every cell is present;
    NaN otherwise (pretraining needs no group labels)."""
    from ..core.errors import DataError
    from ..fairness.metrics import group_metrics

    try:
        g = group_metrics(preds.targets, preds.protected, preds.preds)
    except DataError:
        return {"val_wst": math.nan, "val_eo": math.nan}
    return {"val_wst": g.wst, "val_eo": g.eo}


@dataclass
class _Optimizers:
    """SGD, its MultiStepLR schedule and (fp16 on CUDA) the gradient scaler."""

    optimizer: Any
    scheduler: Any
    scaler: Any


@dataclass
class _FitState:
    """What `fit` carries from one epoch to the next, and what a resumable state restores."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: "dict[str, torch.Tensor] | None" = None
    best_epoch: int = 0
    best_acc: float = -math.inf  # the selection score of the best epoch
    start: int = 1  # the first epoch to run
    history_started: bool = False  # the history file is (re)written at the first epoch's end

    def keep_if_best(self, epoch: int, score: float, model: "nn.Module", *, has_val: bool) -> None:
        better = score > self.best_acc if has_val else True  # strict: ties keep the earlier epoch
        if better or self.best_state is None:
            self.best_epoch, self.best_acc = epoch, score
            self.best_state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def fit(
    model: "nn.Module",
    train_loader: Any,
    val_loader: Any,
    *,
    optim: OptimConfig,
    device: "torch.device | str",
    trainable: set[str] | None = None,
    bn: str = "update",
    amp: bool | None = None,
    channels_last: bool | None = None,
    progress: Progress = NULL,
    description: str = "train",
    restore_best: bool = True,
    resumable: "Resumable | None" = None,
    on_epoch: "Callable[[dict[str, Any]], None] | None" = None,
    objective: Any = None,
    select: str = "overall",
) -> FitResult:
    """Train for `optim.epochs` epochs and keep the state with the best validation score (ties: earlier epoch):
    `select` is overall accuracy, worst-class or worst-group accuracy (`modelselect.py`).

    trainable: parameter names to update (all if None). The others get requires_grad=False and are left out
    of the optimizer, so weight decay and momentum never touch them: they stay bit-identical.
    bn: "update" puts every module in train mode (all BN running stats update, as the paper's code does);
    "freeze" keeps BN layers whose weight and bias are both frozen in eval mode (their stats stay put).
    restore_best: load the best state back into `model` at the end (requires_grad flags are restored too).
    `val_loader` may be None: then the last epoch is kept and best_val_acc is NaN.
    resumable: after every epoch rank 0 saves the resumable state to `resumable.path` (atomically); with
    `resumable.resume` training continues from the state found there (see resume.py).
    on_epoch: called with each epoch's history row (TensorBoard).
    objective: a method's loss (see train_one_epoch); it may hold state (`start`, `state_tensors`,
    `load_state_tensors`), which the resumable state carries.
    """
    import torch

    if bn not in BN_MODES:
        raise UsageError(MSG_BAD_BN.format(modes=", ".join(BN_MODES), bn=bn))
    if optim.epochs < 1:
        raise UsageError(MSG_BAD_EPOCHS.format(epochs=optim.epochs))
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    params, old_flags, frozen_bn = _set_trainable(model, trainable, bn)
    net = _place(model, device, channels_last)
    opt = _optimizers(params, optim, device, amp)
    if objective is not None:
        objective.start(model=model, optimizer=opt.optimizer, device=device)
    state = _FitState()
    if resumable is not None and resumable.resume:
        state = _resume(resumable, model, opt, objective, description=description, epochs=optim.epochs)
    history_file = resumable.history if resumable is not None and dist.is_main() else None
    try:
        with progress.task(description, total=optim.epochs) as overall:  # one bar for the whole run (ETA)
            overall.advance(state.start - 1)
            for epoch in range(state.start, optim.epochs + 1):
                stats, val_acc, lr = _epoch(net, model, train_loader, val_loader, opt.optimizer, epoch=epoch,
                                            optim=optim, device=device, amp=amp, scaler=opt.scaler,
                                            channels_last=channels_last, frozen_bn=frozen_bn, progress=progress,
                                            description=description, objective=objective, select=select)
                opt.scheduler.step()
                state.history.append({"epoch": epoch, "lr": lr, "loss": stats["loss"], "acc": stats["acc"],
                                      "val_acc": val_acc, "val_wst": stats.get("val_wst", math.nan),
                                      "val_eo": stats.get("val_eo", math.nan), "img_s": stats["img_s"],
                                      "seconds": stats["seconds"]})
                if on_epoch is not None:
                    on_epoch(state.history[-1])
                log.info("%s epoch %d/%d: loss %.4f  train acc %.4f  val acc %.4f",
                         description, epoch, optim.epochs, stats["loss"], stats["acc"], val_acc)
                overall.advance(1, val_acc=f"{val_acc:.3f}")
                state.keep_if_best(epoch, stats.get("val_score", val_acc), model, has_val=val_loader is not None)
                _save_epoch(state, epoch, resumable=resumable, history_file=history_file, model=model, opt=opt,
                            objective=objective)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(old_flags[n])
    return _fit_result(state, model, restore_best=restore_best, select=select)


def _set_trainable(model: "nn.Module", trainable: set[str] | None, bn: str) -> tuple[list, dict[str, bool], list]:
    """Only `trainable` tensors require gradients (all when None); returns them, the old requires_grad flags (to
    restore) and the BatchNorm layers `bn="freeze"` keeps in eval mode."""
    names = [n for n, _ in model.named_parameters()]
    if trainable is None:
        trainable = set(names)
    unknown = sorted(set(trainable) - set(names))
    if unknown:
        raise UsageError(MSG_UNKNOWN_TRAINABLE.format(names=", ".join(unknown[:5])))
    params = [p for n, p in model.named_parameters() if n in trainable]
    if not params:
        raise UsageError(MSG_NOTHING_TRAINABLE)
    old_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    frozen_bn = _frozen_batchnorms(model, trainable) if bn == "freeze" else []
    return params, old_flags, frozen_bn


def _place(model: "nn.Module", device: "torch.device", channels_last: bool) -> "nn.Module":
    """The model on its device (channels_last if asked); under torchrun wrapped in DDP, which averages gradients
    over ranks."""
    import torch

    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if dist.init():
        from torch.nn.parallel import DistributedDataParallel as DDP

        # frozen tensors (requires_grad=False) are left out by DDP itself; every trainable one gets a gradient
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def _optimizers(params: list, optim: OptimConfig, device: "torch.device", amp: bool) -> _Optimizers:
    import torch

    optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(optim.milestones), gamma=optim.gamma)
    scaler = torch.amp.GradScaler(device.type) if amp and device.type == "cuda" else None
    return _Optimizers(optimizer=optimizer, scheduler=scheduler, scaler=scaler)


def _resume(resumable: "Resumable", model: "nn.Module", opt: _Optimizers, objective: Any, *, description: str,
            epochs: int) -> _FitState:
    """The model, optimizer, schedule, scaler and objective as the resumable state left them, and where to go on."""
    from .resume import load_state, restore

    saved, _config = load_state(resumable.path)
    restore(saved, model=model, optimizer=opt.optimizer, scheduler=opt.scheduler, scaler=opt.scaler)
    if objective is not None:
        objective.load_state_tensors(saved.extra)
    log.info("%s: resumed after epoch %d of %d from %s", description, saved.epoch, epochs, resumable.path)
    return _FitState(history=list(saved.history), best_state=saved.best, best_epoch=saved.best_epoch,
                     best_acc=-math.inf if math.isnan(saved.best_acc) else saved.best_acc, start=saved.epoch + 1)


def _save_epoch(state: _FitState, epoch: int, *, resumable: "Resumable | None", history_file: Any,
                model: "nn.Module", opt: _Optimizers, objective: Any) -> None:
    """After an epoch: rank 0 saves the resumable state and adds the epoch's row to the history file (written anew
    at the first epoch's end: a run that fails before leaves none)."""
    if resumable is not None and dist.is_main():
        from .resume import save_state

        save_state(resumable.path, config=resumable.config, model=model, optimizer=opt.optimizer,
                   scheduler=opt.scheduler, scaler=opt.scaler, epoch=epoch, best_state=state.best_state,
                   best_epoch=state.best_epoch, best_acc=state.best_acc, history=state.history,
                   extra=None if objective is None else objective.state_tensors())
    if history_file is not None and state.history_started:
        append_history(history_file, state.history[-1])
    elif history_file is not None:
        start_history(history_file, state.history)
        state.history_started = True


def _fit_result(state: _FitState, model: "nn.Module", *, restore_best: bool, select: str) -> FitResult:
    """The best epoch's state (loaded back into `model` when `restore_best`), the model in eval mode."""
    assert state.best_state is not None  # epochs >= 1
    if restore_best:
        model.load_state_dict(state.best_state)
    model.eval()
    # best_acc is the selection score; the reported figure is the best epoch's overall val accuracy
    best_val = next((float("nan" if h.get("val_acc") is None else h["val_acc"]) for h in state.history
                     if h["epoch"] == state.best_epoch), float(state.best_acc))
    return FitResult(best_state=state.best_state, best_epoch=state.best_epoch, best_val_acc=best_val,
                     history=state.history, best_score=float(state.best_acc), select=select)
