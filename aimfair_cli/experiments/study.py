"""`aimfair study`: the paper's studies (`aimfair_cli/experiments/catalogue.py`) on a run folder that already holds real
manifests and a synthetic pool (e.g. what `runs/celeba_smiling_male.sh` made), with the paper's training sizes.

    <run>/data/{train,val,test}.csv, <run>/synth/metadata.jsonl  ->  <run>/studies/seed<k>/..., report.md, commands.sh

The run folder's files are inputs only: nothing in it is written outside the output folder. The prompts study
needs synthetic images from other prompt files and runs on the offline benchmark (`aimfair demo --study prompts`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import layout
from ..core.errors import UsageError
from ..core.fsio import check_writable
from ..core.options import (CACHE_HELP, CROP_HELP, DEVICE_HELP, MAX_BATCH, MAX_EPOCHS, MAX_IMAGE, MAX_IMAGES, MAX_LR,
                            MAX_WORKERS, MIN_IMAGE, check, option)
from ..core.progress import NULL, Progress
from ..training.models import PARAM_BLOCKS
from .catalogue import run_folder_study_help

MSG_MISSING = "{path} not found: --run must hold data/train.csv, data/val.csv, data/test.csv and synth/metadata.jsonl"


@dataclass
class StudyConfig:
    """Options of `aimfair study` (defaults: the paper's CelebA set-up, §4.3)."""

    run: Path = option(Path("."), path="dir", help="Run folder with data/{train,val,test}.csv and synth/metadata.jsonl.")
    study: str = option("main", help=run_folder_study_help())
    out: Path | None = option(None, short=("-o",), path="dir", help="Output folder.", default_text="<run>/studies")
    seeds: int = option(3, help="Training seeds; tables show mean ± std and paired 95 % intervals over them.",
                        min=1, max=100)
    image_size: int = option(224, help="Side of the square input image in pixels.", min=MIN_IMAGE, max=MAX_IMAGE)
    batch_size: int = option(128, help="Images per batch.", min=1, max=MAX_BATCH)
    crop_scale: float = option(0.08, help=CROP_HELP, above=0, max=1)
    weights: str = option("imagenet", choices=("imagenet", "none"), help="Initial weights of every pretraining.")
    pretrain_epochs: int = option(15, help="Pretraining epochs.", min=1, max=MAX_EPOCHS)
    pretrain_lr: float = option(0.01, help="Pretraining learning rate.", above=0, max=MAX_LR)
    pretrain_milestones: tuple[int, ...] = option((10,), help="Pretraining epochs after which lr drops ×0.1.",
                                                  min=1, max=MAX_EPOCHS)
    finetune_epochs: int = option(10, help="Fine-tuning epochs of every strategy.", min=1, max=MAX_EPOCHS)
    finetune_lr: float = option(0.06, help="Fine-tuning learning rate of every strategy.", above=0, max=MAX_LR)
    topk: str = option("55", help="k of the mask, tensors or percent.")
    n_synth: int | None = option(None, min=4, max=MAX_IMAGES, help="Balanced synthetic images of each fine-tuning.",
                                 default_text="as many as the real training images")
    blocks: tuple[str, ...] = option(PARAM_BLOCKS, choices=PARAM_BLOCKS,
                                     help="Blocks tried by the best single-block baselines.")
    workers: int = option(2, help="Data-loader worker processes.", min=0, max=MAX_WORKERS)
    device: str = option("auto", help=DEVICE_HELP)
    cache: bool = option(True, help=CACHE_HELP)


def _check_early(c: StudyConfig) -> None:
    """--topk against the architecture and --device, before any work."""
    from ..stages.mask import check_topk
    from ..training.models import resolve_device

    check_topk(c.topk)
    resolve_device(c.device)


def run_study(cfg: StudyConfig, *, progress: Progress = NULL, announce: Any = None) -> Any:
    from ..core.config import write_resolved_config
    from .catalogue import MSG_PROMPTS_NEEDS_SYNTH, Sizes, Sources, StudiesResult, execute, parse_studies
    from .report import write_report

    c = check(cfg)
    # `all` here: every study that needs no new synthetic images
    studies = [s for s in parse_studies(c.study) if c.study.strip() != "all" or not s.offline_only]
    if any(s.offline_only for s in studies):
        raise UsageError(MSG_PROMPTS_NEEDS_SYNTH)
    _check_early(c)
    run = Path(c.run).resolve()
    src = Sources(train=run / layout.TRAIN, val=run / layout.VAL, test=run / layout.TEST,
                  prompts=run / layout.PROMPTS_DIR, synth=run / layout.SYNTH_MANIFEST)
    for path in (src.train, src.val, src.test, src.synth):
        if not path.is_file():
            raise UsageError(MSG_MISSING.format(path=path))
    out = Path(c.out or run / "studies").resolve()
    check_writable(out, folder=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    n_train = max(0, sum(1 for _ in open(src.train, "rb")) - 1)
    n_val = max(0, sum(1 for _ in open(src.val, "rb")) - 1)
    n_test = max(0, sum(1 for _ in open(src.test, "rb")) - 1)
    sizes = Sizes(image_size=c.image_size, batch_size=c.batch_size, crop_scale=c.crop_scale,
                  pretrain_epochs=c.pretrain_epochs, pretrain_lr=c.pretrain_lr,
                  pretrain_milestones=tuple(c.pretrain_milestones), finetune_epochs=c.finetune_epochs,
                  finetune_lr=c.finetune_lr, topk=c.topk, n_train=n_train, n_synth=c.n_synth or n_train,
                  blocks=tuple(c.blocks), weights=c.weights, workers=c.workers, device=c.device, cache=c.cache,
                  n_val=n_val, n_test=n_test)
    done = execute(out, studies, [], src, sizes, c.seeds, progress=progress, announce=announce, title="aimfair study")
    write_resolved_config(out, "study", c)
    done.pipe.write_commands(out / "commands.sh", f"The shell commands equivalent to `aimfair study` on {run}.")
    seconds = time.perf_counter() - started
    intro = (f"Run folder {run}: {n_train} real training images at {c.image_size} px, {c.seeds} seed(s), studies: "
             f"{', '.join(s.name for s in studies)}; wall time {seconds / 60:.1f} min.")
    report = write_report(out, intro=intro, studies=studies, results=done.results, mask_summary=done.mask_summary,
                          seeds=c.seeds, blocks=c.blocks, commands=done.pipe.commands())
    return StudiesResult(out=out, studies=studies, results=done.results, report=report, seconds=seconds, plan=done.plan,
                         mask_summary=done.mask_summary, config=c)
