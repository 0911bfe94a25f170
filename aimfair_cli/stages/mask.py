"""`aimfair mask`: Selective Mask Generation (paper §3.2).

Three mean-gradient passes over the same checkpoint — real-biased (R), synthetic-biased (S1),
synthetic-balanced (S2) — with no optimizer step, then Δ1/Δ2 per tensor and K1 ∩ K2 (see masking/selection.py).
Each pass reads its set as the released code's gradient pass does: in a seeded random order (so every batch
mixes the cells and BatchNorm's batch statistics never follow one cell), with the training augmentation
(RandomResizedCrop at the training crop scale + flip) and BatchNorm in training mode. The checkpoint's state,
running statistics included, is restored before every pass so each set sees the same model. Unlike the
released code, which averages per-batch mean gradients and drops the last partial batch, the sum of
per-image gradients is divided once by N: the exact mean over every image of the set.

A pass is a pure function of the checkpoint, the set (files and labels), the seed and the loader settings, so
its result is kept in memory for the process (`_passes`): masks that share a set with an earlier one (the
bias-ratio study's real and balanced passes, the cosine score's three) reuse it instead of running it again.
"""

from __future__ import annotations

import logging
import math
import random
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import dist, layout
from ..core.config import config_path_for, write_resolved_config
from ..core.errors import MaskError, UsageError
from ..core.fsio import check_outputs, check_suffix
from ..core.manifest import Manifest, read_manifest
from ..core.options import (ALLOW_DUPLICATES_HELP, AMP_HELP, CACHE_HELP, CHANNELS_LAST_HELP, CROP_HELP, DEVICE_HELP,
                            MAX_BATCH, MAX_IMAGES, MAX_SEED, MAX_WORKERS, SPEED_MODES, check, default_of, option)
from ..core.progress import NULL, Progress
from ..core.provenance import provenance, sha256_file
from ..fairness.cells import CELLS, parse_bias
from ..masking.maskfile import Mask, load_mask, mask_scores, save_mask
from ..masking.selection import SCORES, TensorScore, cutoffs, parse_topk, score_tensors, select, top_k
from ..masking.synthsets import DEFAULT_MINORITY, build_synthetic_sets, largest_biased

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_PASSES_KEPT = 6  # gradient passes kept in memory (LRU), ~45 MB each for ResNet-18
_passes: "OrderedDict[tuple, dict[str, torch.Tensor]]" = OrderedDict()

MSG_FROM_NO_SCORES = "--from-mask {path} stores no scores for every tensor; make the mask again with this version"
MSG_FROM_CONFLICT = "--{flag} {ours} differs from the {theirs} of --from-mask {path}; drop --{flag} or make a new mask"


@dataclass
class MaskConfig:
    """Options of `aimfair mask` (flags, the `mask:` section of aimfair.yaml, the saved config)."""

    model: Path = option(layout.PRETRAIN, short=("-m",), help="Model checkpoint (.safetensors).", path="file")
    real: Path = option(layout.TRAIN, help="Biased real training manifest.", path="file")
    synth: Path = option(layout.SYNTH_MANIFEST, help="Synthetic manifest from `aimfair synth`.", path="file")
    out: Path = option(layout.MASK, short=("-o",), help="Mask file (.safetensors).", path="file")
    topk: str = option("55", help="k, in tensors (55) or as a share of all tensors (88%). The paper's best is 55 of 62; "
                       "k larger than the model's tensor count is an error.")
    score: str = option("absdiff", choices=SCORES,
                        help="absdiff (mean |Δg|, the paper's) or cosine (1 − cos, Tab. 4).")
    bias_ratio: str = option("1:9", help="Bias of the synthetic-biased set, minority:majority (1:9), or auto: estimated "
                             "from the biased model's error rate on the real data and its per-group accuracy on "
                             "balanced synthetic data.")
    n_synth: int | None = option(None, min=4, max=MAX_IMAGES, help="Images in each synthetic set.",
                                 default_text="as many as the real set")
    max_samples: int | None = option(None, min=4, max=MAX_IMAGES,
                                     help="Cap the images per set (a cheaper, approximate mask); fine-tuning keeps "
                                     "the full balanced set.", default_text="no cap")
    batch_size: int = option(128, help="Images per batch.", min=1, max=MAX_BATCH)
    # the training crop scale: the gradients see the augmentation fine-tuning will see
    crop_scale: float = option(0.08, help=CROP_HELP, above=0, max=1)
    workers: int = option(2, help="Data-loader worker processes.", min=0, max=MAX_WORKERS)
    device: str = option("auto", help=DEVICE_HELP)
    amp: str = option("auto", help=AMP_HELP, choices=SPEED_MODES)
    channels_last: str = option("auto", help=CHANNELS_LAST_HELP, choices=SPEED_MODES)
    cache: bool = option(True, help=CACHE_HELP)
    seed: int = option(0, help="Random seed; the same seed reproduces the run.", min=0, max=MAX_SEED)
    allow_duplicates: bool = option(False, help=ALLOW_DUPLICATES_HELP)
    plot: Path | None = option(None, path="file", help="Also draw Δ1 against Δ2 for every tensor, with both top-k "
                               "cut-offs and the selection, to this PNG file.")
    from_mask: Path | None = option(None, path="file", help="Select at --topk from the Δ1/Δ2 scores a mask file made "
                                    "earlier for this --model stores: no gradient passes, seconds (a k sweep). Its "
                                    "score and bias ratio apply; --real and --synth are not read.")


@dataclass
class BiasEstimate:
    """What `--bias-ratio auto` inferred: the minority share from the biased model's error rate on the real
    training data (JTT's error set), and which protected value is rare for each target value from its
    per-group accuracy on the balanced synthetic data."""

    error_rate: float
    bias: Fraction
    minority: dict[int, int]
    synthetic_group_accuracy: dict[str, float]


@dataclass
class MaskResult:
    out: Path
    mask: Mask
    k: int
    scores: dict[str, TensorScore]
    sizes: dict[str, int]
    bias: Fraction
    minority: dict[int, int]
    estimate: BiasEstimate | None
    seconds: float
    blocks: list[dict[str, Any]] = field(default_factory=list)
    cutoffs: tuple[float, float] = (float("nan"), float("nan"))  # Δ1 of the k-th smallest, Δ2 of the k-th largest
    plot: Path | None = None


def _subset(m: Manifest, rows: list[dict[str, Any]]) -> Manifest:
    return Manifest(path=m.path, rows=rows, columns=m.columns)


def _loader(manifest: Manifest, *, image_size: int, mean, std, cfg: MaskConfig):
    """Evaluation loader (plain resize, file order) for the `auto` bias estimate."""
    from ..training.images import ImageDataset, build_transform, make_loader

    ds = ImageDataset(manifest, build_transform(image_size, train=False, mean=mean, std=std))
    # unpadded shards under torchrun: the gradient sums over ranks count every image exactly once
    return make_loader(ds, batch_size=cfg.batch_size, shuffle=False, workers=cfg.workers, seed=cfg.seed,
                       pad_shards=False)


def pass_seed(seed: int, label: str) -> int:
    """A 31-bit seed per (seed, set): each gradient pass has its own order and augmentations, the same in
    every run, whatever ran before it."""
    return zlib.crc32(f"{seed}:{label}".encode()) & 0x7FFFFFFF


def gradient_loader(manifest: Manifest, *, label: str, image_size: int, mean, std, cfg: MaskConfig, device,
                    progress: Progress = NULL):
    """The loader of one gradient pass: every image once, in a seeded random order of the rows' file names
    (mixed cells in every batch; the order of lines in the manifest does not matter), with the training
    augmentation, from the decoded-image cache unless --no-cache. Reading files with workers=0, the
    augmentation draws from torch's global RNG: seed it with the same pass_seed before iterating
    (mean_gradients does)."""
    from ..training.images import pass_order, row_key
    from ..training.tensorcache import make_train_loader

    order = pass_order([row_key(r) for r in manifest.rows], pass_seed(cfg.seed, label))
    return make_train_loader(manifest, cache=cfg.cache, image_size=image_size, crop_scale=cfg.crop_scale, mean=mean,
                             std=std, batch_size=cfg.batch_size, seed=pass_seed(cfg.seed, label), workers=cfg.workers,
                             device=device, order=order, progress=progress)


def mean_gradients(model, loader, *, state: dict, device, task=None, rng_seed: int | None = None, amp: bool = False,
                   channels_last: bool = False) -> dict[str, "torch.Tensor"]:
    """g = (1/N) Σ_i ∇θ L(θ; x_i, y_i) for every parameter tensor (Eq. 1–3), summed over ranks under torchrun.
    rng_seed, if given, seeds torch's global RNG first (the augmentation's source when workers=0). amp: the
    forward pass under autocast (fp16 on CUDA, bf16 on CPU); the loss is a sum over the batch, which keeps fp16
    activation gradients away from underflow, and the parameter gradients are fp32."""
    import torch
    import torch.nn.functional as F

    from ..training.images import batches
    from ..training.loop import autocast

    if rng_seed is not None:
        torch.manual_seed(rng_seed)
    model.load_state_dict(state)
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = torch.zeros((), dtype=torch.float64, device=device)
    for images, targets, _protected, _idx in batches(loader):
        images, targets = images.to(device, memory_format=fmt), targets.to(device)
        model.zero_grad(set_to_none=True)
        with autocast(torch.device(device), amp):
            logits = model(images).squeeze(1).float()  # [B]
        # reduction="sum" and one division by N at the end gives the exact dataset mean, whatever the batching
        F.binary_cross_entropy_with_logits(logits, targets, reduction="sum").backward()
        for n, p in params.items():
            if p.grad is not None:
                sums[n] += p.grad.float()
        count += len(targets)
        if task is not None:
            task.advance(1)
    if dist.is_distributed():
        # one reduction of all tensors flattened together rather than 62 small ones
        flat = dist.all_reduce_sum(torch.cat([g.reshape(-1) for g in sums.values()]))
        for g, part in zip(sums.values(), flat.split([g.numel() for g in sums.values()])):
            g.copy_(part.view_as(g))
        dist.all_reduce_sum(count)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    return {n: (g / count).cpu() for n, g in sums.items()}


def pass_key(manifest: Manifest, *, label: str, model_sha: str, image_size: int, mean, std, cfg: MaskConfig, device,
             amp: bool, channels_last: bool) -> tuple:
    """Everything one gradient pass depends on: the model checkpoint's SHA-256, every image file (path, size,
    modification time) with its labels, the pass's seed and the loader and precision settings."""
    from ..training.tensorcache import files_fingerprint

    labels = tuple((r["target"], r.get("protected")) for r in manifest.rows)
    return (model_sha, files_fingerprint(manifest), labels, pass_seed(cfg.seed, label), image_size, tuple(mean),
            tuple(std), cfg.crop_scale, cfg.batch_size, cfg.workers, cfg.cache, str(device), amp, channels_last,
            dist.world_size(), dist.rank())


def clear_passes() -> None:
    """Forget the gradient passes kept in memory (the next mask runs all of its passes)."""
    _passes.clear()


def _estimate_bias(model, real: Manifest, balanced: list[dict[str, Any]], synth: Manifest, *, image_size, mean, std,
                   cfg: MaskConfig, device) -> BiasEstimate:
    from ..training.loop import predict

    model.eval()
    pr = predict(model, _loader(real, image_size=image_size, mean=mean, std=std, cfg=cfg), device=device,
                 what=str(cfg.model))
    error = float(((pr.scores >= 0.5).astype(int) != pr.targets).mean())
    # A biased model errs mostly on the minority cells, so the error rate approximates the minority share.
    share = min(max(error, 0.01), 0.5)
    bias = Fraction(share / (1 - share)).limit_denominator(1000)
    ps = predict(model, _loader(_subset(synth, balanced), image_size=image_size, mean=mean, std=std, cfg=cfg),
                 device=device, what=str(cfg.model))
    correct = (ps.scores >= 0.5).astype(int) == ps.targets
    acc = {}
    for y, s in CELLS:
        sel = (ps.targets == y) & (ps.protected == s)
        acc[(y, s)] = float(correct[sel].mean()) if sel.any() else float("nan")
    minority = {y: (0 if acc[(y, 0)] <= acc[(y, 1)] else 1) for y in (0, 1)}
    return BiasEstimate(error_rate=error, bias=bias, minority=minority,
                        synthetic_group_accuracy={f"{y},{s}": a for (y, s), a in acc.items()})


def block_table(model, selected: list[str]) -> list[dict[str, Any]]:
    """Selected/total tensors per block (stem, layer1..4, fc) and kind (conv, bn, fc)."""
    import torch.nn as nn

    from ..training.models import block_of

    kinds = {}
    for mod_name, mod in model.named_modules():
        kind = "conv" if isinstance(mod, nn.Conv2d) else "bn" if isinstance(mod, nn.BatchNorm2d) else \
            "fc" if isinstance(mod, nn.Linear) else None
        if kind:
            for p_name, _ in mod.named_parameters(recurse=False):
                kinds[f"{mod_name}.{p_name}"] = kind
    chosen = set(selected)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name, _ in model.named_parameters():
        key = (block_of(name), kinds.get(name, "other"))
        row = rows.setdefault(key, {"block": key[0], "kind": key[1], "selected": 0, "total": 0})
        row["total"] += 1
        row["selected"] += name in chosen
    return list(rows.values())


def plot_selection(path: str | Path, mask: Mask, *, title: str | None = None) -> Path:
    """Δ1 against Δ2 for every tensor of a mask file: the K1 cut-off (k smallest Δ1, left of the vertical line)
    and the K2 cut-off (k largest Δ2, above the horizontal line), the selected tensors K1 ∩ K2 filled, and the
    count per block (stem, layer1..4, fc) in the legend."""
    from ..fairness.plots import score_scatter
    from ..training.models import block_of

    scores, k = mask_scores(mask), int(mask.meta["k"])
    names = list(scores)
    by_d1, by_d2 = top_k(scores, len(names))  # every tensor, in K1's and K2's rank order
    x_cut = (scores[by_d1[k - 1]].delta1, scores[by_d1[k]].delta1) if k < len(names) else None
    y_cut = (scores[by_d2[k - 1]].delta2, scores[by_d2[k]].delta2) if k < len(names) else None
    chosen = set(mask.selected)
    return score_scatter(
        # ASCII labels: Pillow's built-in font has no Greek letters or set symbols.
        path, title=title or f"{len(chosen)} of {len(names)} tensors selected (k={k})",
        x=[scores[n].delta1 for n in names], y=[scores[n].delta2 for n in names],
        groups=[block_of(n) for n in names], highlighted=[n in chosen for n in names], x_cut=x_cut, y_cut=y_cut,
        xlabel="delta1 = mean |g_R - g_S1| (domain gap; K1 = the k smallest)",
        ylabel="delta2 = mean |g_S1 - g_S2| (bias; K2 = the k largest)", region_label="K1 and K2: selected",
    )


@dataclass
class MaskSets:
    """The three sets the gradients are computed on (real-biased, synthetic-biased, synthetic-balanced), by label,
    and what built them: the bias ratio and minority cells (given or estimated) and the uncapped set size."""

    named: dict[str, Manifest]
    bias: Fraction
    minority: dict[int, int]
    estimate: BiasEstimate | None
    auto: bool
    n_full: int  # each synthetic set's size without --max-samples: `finetune`'s default balanced set

    @property
    def sizes(self) -> dict[str, int]:
        return {label: len(m.rows) for label, m in self.named.items()}


def run_mask(cfg: MaskConfig, *, progress: Progress = NULL) -> MaskResult:
    """The mask in named phases: the sets (`mask_sets`), the gradient passes (`gradient_passes`), the scores
    (`finite_scores`) and K1 ∩ K2, then the mask file (`mask_file`, `_write`). `--from-mask` skips to the
    selection (`_reselect`)."""
    from ..training.checkpoint import load_checkpoint
    from ..training.loop import seed_everything
    from ..training.models import resolve_device

    cfg = _check_options(cfg)
    started = time.perf_counter()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model, meta = load_checkpoint(cfg.model, device=device)
    k = parse_topk(cfg.topk, len(list(model.parameters())))
    if cfg.from_mask is not None:
        return _reselect(cfg, model, device, k, started)
    state = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
    sets = mask_sets(cfg, model, meta, device)
    grads = gradient_passes(cfg, model, meta, state, sets.named, device, progress=progress)
    scores = finite_scores(cfg, grads)
    selected = select(scores, k)
    mask = mask_file(cfg, model, k, scores, selected, sets, device)
    _write(cfg, mask)
    return MaskResult(out=Path(cfg.out), mask=mask, k=k, scores=scores, sizes=sets.sizes, bias=sets.bias,
                      minority=sets.minority, estimate=sets.estimate, seconds=time.perf_counter() - started,
                      blocks=block_table(model, selected), cutoffs=cutoffs(scores, k),
                      plot=None if cfg.plot is None else Path(cfg.plot))


def _check_options(cfg: MaskConfig) -> MaskConfig:
    """Every option that can be checked before the checkpoint is read: the bias ratio, the batch under torchrun,
    the output suffixes and that no output is an input."""
    cfg = check(cfg)
    if str(cfg.bias_ratio).strip().lower() != "auto":
        parse_bias(cfg.bias_ratio)
    dist.local_batch(cfg.batch_size)  # under torchrun the global batch must split evenly across ranks
    check_suffix(cfg.out, (".safetensors",), "--out")
    if cfg.plot is not None:
        check_suffix(cfg.plot, (".png",), "--plot")
    read = {"--model": cfg.model, "--from-mask": cfg.from_mask} if cfg.from_mask is not None else \
        {"--model": cfg.model, "--real": cfg.real, "--synth": cfg.synth}
    check_outputs({"--out": cfg.out, "the resolved config": config_path_for(cfg.out, "mask"), "--plot": cfg.plot}, read)
    return cfg


def mask_sets(cfg: MaskConfig, model: Any, meta: dict[str, Any], device: Any) -> MaskSets:
    """Phase 1, the sets: the real set (capped at --max-samples), and the synthetic-biased and synthetic-balanced
    sets drawn from --synth at the given bias ratio or, with `auto`, the one the biased model's errors suggest."""
    from ..training.images import check_images, check_trainable, row_key

    image_size, mean, std = meta["image_size"], meta["mean"], meta["std"]
    auto = str(cfg.bias_ratio).strip().lower() == "auto"
    bias = None if auto else parse_bias(cfg.bias_ratio)
    real = read_manifest(cfg.real, allow_duplicates=cfg.allow_duplicates)
    synth = read_manifest(cfg.synth, require_protected=True, allow_duplicates=cfg.allow_duplicates)
    # Size of each synthetic set without the cap: also the default balanced set of `finetune`, which a cheaper
    # mask must not shrink.
    n_full = cfg.n_synth or len(real.rows)
    if cfg.max_samples is not None and cfg.max_samples < len(real.rows):
        canonical = sorted(range(len(real.rows)), key=lambda i: (row_key(real.rows[i]), i))
        keep = sorted(random.Random(f"{cfg.seed}:real").sample(canonical, cfg.max_samples))
        real = _subset(real, [real.rows[i] for i in keep])
    n = n_full if cfg.max_samples is None else min(n_full, cfg.max_samples)

    estimate = None
    minority = dict(DEFAULT_MINORITY)
    n_biased = n
    if auto:
        balanced_only = build_synthetic_sets(synth.rows, n=n, bias=Fraction(1), seed=cfg.seed).balanced
        estimate = _estimate_bias(model, real, balanced_only, synth, image_size=image_size, mean=mean, std=std,
                                  cfg=cfg, device=device)
        bias, minority = estimate.bias, estimate.minority
        # The estimated ratio can be steeper than the synthetic pool was sized for (a pool of 0.45 N per group
        # holds 1:9, not 1:15): keep the ratio and shrink the biased set to what the pool holds.
        n_biased = largest_biased(synth.rows, n=n, bias=bias, minority=minority) or n
        if n_biased < n:
            log.warning("mask: the estimated bias %s:%s needs more synthetic images in a majority cell than "
                        "--synth holds; the synthetic-biased set has %d images instead of %d",
                        bias.numerator, bias.denominator, n_biased, n)
    sets = build_synthetic_sets(synth.rows, n=n, bias=bias, minority=minority, seed=cfg.seed, n_biased=n_biased)
    named = {
        "real": real,
        "synthetic_biased": _subset(synth, sets.biased),
        "synthetic_balanced": _subset(synth, sets.balanced),
    }
    for label, m in named.items():
        check_trainable(len(m.rows), f"mask: the {label.replace('_', ' ')} set", cfg.batch_size)
    for m in named.values():
        check_images(m)
    return MaskSets(named=named, bias=bias, minority=minority, estimate=estimate, auto=auto, n_full=n_full)


def gradient_passes(cfg: MaskConfig, model: Any, meta: dict[str, Any], state: dict, named: dict[str, Manifest],
                    device: Any, *, progress: Progress = NULL) -> dict[str, "torch.Tensor"]:
    """Phase 2, the gradient passes: the mean gradient of each set from the checkpoint's `state`, or the same pass
    kept in memory from an earlier mask of this process (`pass_key`)."""
    import torch

    image_size, mean, std = meta["image_size"], meta["mean"], meta["std"]
    amp = device.type == "cuda" if cfg.amp == "auto" else cfg.amp == "on"
    channels_last = device.type == "cuda" if cfg.channels_last == "auto" else cfg.channels_last == "on"
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    grads = {}
    # the checkpoint's hash, which the provenance records too (computed once per process and file)
    model_sha = sha256_file(cfg.model)
    for label, manifest in named.items():
        key = pass_key(manifest, label=label, model_sha=model_sha, image_size=image_size, mean=mean, std=std, cfg=cfg,
                       device=device, amp=amp, channels_last=channels_last)
        if key in _passes:
            _passes.move_to_end(key)
            grads[label] = _passes[key]
            log.info("gradients: %s: the same pass as an earlier mask of this process, reused",
                     label.replace("_", " "))
            continue
        loader = gradient_loader(manifest, label=label, image_size=image_size, mean=mean, std=std, cfg=cfg,
                                 device=device, progress=progress)
        with progress.task(f"gradients: {label.replace('_', ' ')}", total=len(loader)) as task:
            grads[label] = mean_gradients(model, loader, state=state, device=device, task=task,
                                          rng_seed=pass_seed(cfg.seed, label), amp=amp, channels_last=channels_last)
        _passes[key] = grads[label]
        while len(_passes) > _PASSES_KEPT:
            _passes.popitem(last=False)
    return grads


def finite_scores(cfg: MaskConfig, grads: dict[str, "torch.Tensor"]) -> dict[str, TensorScore]:
    """Phase 3, the scores: Δ1 and Δ2 per tensor (`--score`), refused when any is not finite."""
    scores = score_tensors(grads["real"], grads["synthetic_biased"], grads["synthetic_balanced"], score=cfg.score)
    bad = [n_ for n_, s in scores.items() if not (math.isfinite(s.delta1) and math.isfinite(s.delta2))]
    if bad:  # a NaN gradient would rank arbitrarily: no mask is better than a meaningless one
        raise MaskError(MSG_SCORES_NOT_FINITE.format(n=len(bad), name=bad[0], model=cfg.model))
    return scores


def mask_file(cfg: MaskConfig, model: Any, k: int, scores: dict[str, TensorScore], selected: list[str],
              sets: MaskSets, device: Any) -> Mask:
    """Phase 4, the mask file's content: the selection, every parameter's shape and the metadata (k, the scores,
    the bias ratio and how it was found, the sets' sizes, the provenance)."""
    bias, estimate = sets.bias, sets.estimate
    return Mask(
        selected=selected,
        shapes={name: list(p.shape) for name, p in model.named_parameters()},
        meta={
            "k": k,
            "topk": str(cfg.topk),
            "score": cfg.score,
            "scores": {n_: {"delta1": s.delta1, "delta2": s.delta2} for n_, s in scores.items()},
            "bias_ratio": f"{bias.numerator}:{bias.denominator}",
            "bias_ratio_source": "auto" if sets.auto else "given",
            "minority": {str(y): s for y, s in sets.minority.items()},
            "estimate": None if estimate is None else {
                "error_rate": estimate.error_rate,
                "synthetic_group_accuracy": estimate.synthetic_group_accuracy,
            },
            "sizes": sets.sizes,
            "n_synth": sets.n_full,  # uncapped size of each synthetic set: `finetune`'s default balanced set
            "max_samples": cfg.max_samples,
            "crop_scale": cfg.crop_scale,
            "model": str(cfg.model),
            "seed": cfg.seed,
            "provenance": provenance(device, {"--model": cfg.model, "--real": cfg.real, "--synth": cfg.synth}),
        },
    )


MSG_SCORES_NOT_FINITE = ("the gradients of {model} give non-finite scores for {n} tensor(s) (first: {name}): the "
                         "model's weights are degenerate; no mask is written")


def check_topk(topk: str, *, arch: str = "resnet18") -> int:
    """Before a pipeline's work: --topk parsed against the architecture's tensor count (an out-of-range or
    non-numeric k is known as soon as the architecture is, not at the mask step)."""
    from ..training.models import build_model

    return parse_topk(topk, len(list(build_model(weights="none", arch=arch).parameters())))


def _write(cfg: MaskConfig, mask: Mask) -> None:
    """The mask file, its resolved config and --plot. Every rank holds the same mask; one writes it (atomically),
    the others return only once the files exist."""
    if dist.is_main():
        save_mask(cfg.out, mask)
        write_resolved_config(cfg.out, "mask", cfg)
        if cfg.plot is not None:
            plot_selection(cfg.plot, mask)
    dist.barrier()


def _reselect(cfg: MaskConfig, model: Any, device: Any, k: int, started: float) -> MaskResult:
    """`--from-mask`: K1 ∩ K2 at this k from the scores of an earlier mask of the same model. The gradient passes
    are seeded per set, so this is the selection a full run at this k would make."""
    source = load_mask(cfg.from_mask)
    source.check_made_on(model, cfg.model, flag="--from-mask", path=cfg.from_mask, purpose="select for")
    scores = mask_scores(source)
    if list(scores) != list(source.shapes):
        raise UsageError(MSG_FROM_NO_SCORES.format(path=cfg.from_mask))

    def ratio(text: str) -> Any:  # "1:9" and "0.1" agree
        return text if text == "auto" else parse_bias(text)

    # --score / --bias-ratio left at their defaults take the source's; given otherwise, they must agree with it
    source_ratio = "auto" if source.meta.get("bias_ratio_source") == "auto" else str(source.meta.get("bias_ratio"))
    defaults = {f.name: default_of(f) for f in fields(MaskConfig)}
    for name, ours, theirs, same in (
            ("score", cfg.score, source.meta.get("score"), cfg.score == source.meta.get("score")),
            ("bias_ratio", str(cfg.bias_ratio).strip().lower(), source_ratio,
             ratio(str(cfg.bias_ratio).strip().lower()) == ratio(source_ratio))):
        if ours != str(defaults[name]).lower() and not same:
            raise UsageError(MSG_FROM_CONFLICT.format(flag=name.replace("_", "-"), ours=ours, theirs=theirs,
                                                      path=cfg.from_mask))
    selected = select(scores, k)
    meta = {**source.meta, "k": k, "topk": str(cfg.topk), "from_mask": str(cfg.from_mask),
            "provenance": provenance(device, {"--model": cfg.model, "--from-mask": cfg.from_mask})}
    mask = Mask(selected=selected, shapes=source.shapes, meta=meta)
    _write(cfg, mask)
    minority = {int(y): int(v) for y, v in (meta.get("minority") or DEFAULT_MINORITY).items()}
    return MaskResult(out=Path(cfg.out), mask=mask, k=k, scores=scores, sizes=dict(meta.get("sizes") or {}),
                      bias=parse_bias(str(meta["bias_ratio"])), minority=minority, estimate=None,
                      seconds=time.perf_counter() - started, blocks=block_table(model, selected),
                      cutoffs=cutoffs(scores, k), plot=None if cfg.plot is None else Path(cfg.plot))
