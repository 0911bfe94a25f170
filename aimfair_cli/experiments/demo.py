"""`aimfair demo`: the method on the built-in offline benchmark, with the paper's baselines and studies.

    data (photo-style faces, biased train) -> prompts (template) -> synth (procedural) ->
    per seed: the rows of the chosen studies (`aimfair_cli/experiments/catalogue.py`; by default `main`: pretrain (random init)
    -> mask (k = 55) -> finetune {AIM-Fair, full, linear, random tensors at AIM-Fair's ratio, the opposite
    criterion}) -> eval on the real test set -> report.md (`aimfair_cli/experiments/report.py`), commands.sh.

The steps are data (`aimfair_cli/experiments/pipeline.py`): each runs the library function of its command, is reused exactly
when its record (command line, input fingerprints) matches, and is one line of commands.sh.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import write_resolved_config
from ..core.fsio import check_writable
from ..core.options import CACHE_HELP, CROP_HELP, DEVICE_HELP, MAX_BATCH, MAX_EPOCHS, MAX_LR, MAX_WORKERS, check, option
from ..core.progress import NULL, Progress
from ..data.demo import MAX_DEMO_IMAGES, MAX_DEMO_SIZE
from ..training.models import PARAM_BLOCKS as BLOCKS
from .catalogue import demo_study_help
from .report import TASK

log = logging.getLogger(__name__)


# Sizes for these 2-core CPU machines, where a ResNet-18 trains at 120-200 img/s at 64 px: one pretraining of 5
# epochs, a mask, 5 fine-tunings, on 3,000 real and as many synthetic images. Fine-tuning follows the paper's
# schedule: 10 epochs at its lr 0.06 for batch 128, scaled to 0.015 for batch 32. Shorter schedules (2 epochs at
# 0.01, 4 epochs) left full fine-tuning half-way between the biased model and the synthetic one, its threshold on
# real smiles wherever the last epoch put it (seed-0 WST 53 and 61 against 72 at 10 epochs, renderer 11; see
# docs/results/calibration.md). The 10-seed main comparison does not yet fit 90 minutes at these sizes. The
# test split is large enough that its smallest cell (15 % of it) holds 1,000 faces, so a cell's accuracy has a
# sampling error of at most 1.6 points; val stays at 1,000 (it only chooses the epoch). "quick" takes about two
# minutes. A GPU user can raise every number with the options.
# Small batches and mild crops (keeping >= 60 % of the picture, so the mouth stays in) let a randomly initialised
# ResNet-18 learn the task in a few epochs at 64 px (see benchmarks/demo_properties.py).
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(n_train=3000, n_val=1000, n_test=6700, size=64, batch_size=32, crop_scale=0.6, pretrain_epochs=5,
                    pretrain_lr=0.02, pretrain_milestones=(4,), finetune_epochs=10, finetune_lr=0.015,
                    freeze_blocks=("layer1", "fc")),
    "quick": dict(n_train=400, n_val=400, n_test=400, size=32, batch_size=32, crop_scale=0.6, pretrain_epochs=2,
                  pretrain_lr=0.02, pretrain_milestones=(), finetune_epochs=1, finetune_lr=0.01, freeze_blocks=("fc",)),
}


def _preset_text(key: str) -> str:
    d, q = PRESETS["default"][key], PRESETS["quick"][key]
    show = (lambda v: ",".join(map(str, v)) or "none") if isinstance(d, tuple) else str
    return f"{show(d)}; --quick {show(q)}"


@dataclass
class DemoConfig:
    """Options of `aimfair demo`. Sizes left at None come from the preset (`PRESETS`, default or --quick)."""

    out: Path = option(Path("aimfair-demo"), short=("-o",), path="dir", help="Demo folder (reused on rerun).")
    seeds: int = option(1, help="Training seeds; the table shows mean ± std over them.", min=1, max=100)
    study: str = option("main", help=demo_study_help())
    quick: bool = option(False, help="A tiny run (~2 minutes): fewer, smaller images, 2 pretraining epochs, single-block "
                         "baselines on fc only.")
    n_train: int | None = option(None, help="Real training images.", min=8, max=MAX_DEMO_IMAGES,
                                 default_text=_preset_text("n_train"))
    n_val: int | None = option(None, help="Images in the val split (chooses each training's best epoch).", min=8,
                               max=MAX_DEMO_IMAGES, default_text=_preset_text("n_val"))
    n_test: int | None = option(None, help="Images in the test split, where every row is measured.", min=8,
                                max=MAX_DEMO_IMAGES, default_text=_preset_text("n_test"))
    size: int | None = option(None, help="Image side in pixels.", min=16, max=MAX_DEMO_SIZE,
                              default_text=_preset_text("size"))
    pretrain_epochs: int | None = option(None, help="Pretraining epochs.", min=1, max=MAX_EPOCHS,
                                         default_text=_preset_text("pretrain_epochs"))
    pretrain_lr: float | None = option(None, help="Pretraining learning rate.", above=0, max=MAX_LR,
                                       default_text=_preset_text("pretrain_lr"))
    pretrain_milestones: tuple[int, ...] | None = option(None, help="Pretraining epochs after which lr drops ×0.1.",
                                                         min=1, max=MAX_EPOCHS,
                                                         default_text=_preset_text("pretrain_milestones"))
    finetune_epochs: int | None = option(None, help="Fine-tuning epochs of every strategy.", min=1, max=MAX_EPOCHS,
                                         default_text=_preset_text("finetune_epochs"))
    finetune_lr: float | None = option(None, help="Fine-tuning learning rate of every strategy.", above=0,
                                       max=MAX_LR, default_text=_preset_text("finetune_lr"))
    freeze_blocks: tuple[str, ...] | None = option(None, choices=BLOCKS, default_text=_preset_text("freeze_blocks"),
                                                   help="Comma-separated blocks tried by the best single-block baselines "
                                                   "(freeze one, update one: the partial study).")
    topk: str = option("55", help="k for the mask, tensors or percent.")
    batch_size: int | None = option(None, help="Images per batch.", min=1, max=MAX_BATCH,
                                    default_text=_preset_text("batch_size"))
    crop_scale: float | None = option(None, help=CROP_HELP, above=0, max=1, default_text=_preset_text("crop_scale"))
    # images are tiny: loading in the main process beats worker start-up here
    workers: int = option(0, help="Data-loader worker processes.", min=0, max=MAX_WORKERS)
    device: str = option("auto", help=DEVICE_HELP)
    cache: bool = option(True, help=CACHE_HELP)

    def resolved(self) -> "DemoConfig":
        preset = PRESETS["quick" if self.quick else "default"]
        values = {k: (preset[k] if getattr(self, k) is None and k in preset else getattr(self, k))
                  for k in (f.name for f in dataclasses.fields(self))}
        return DemoConfig(**values)


def _sources(c: DemoConfig, out: Path) -> tuple[list[Any], Any]:
    """The shared steps (data, prompts, synth) and the files the seeds read. Prompt and synth variants for the
    prompts study are made on demand."""
    from ..core.provenance import sha256_file
    from ..data.demo import DemoDataConfig
    from ..generators import make_generator
    from ..render import RENDERER_VERSION
    from ..render.vocabulary import default_vocabulary_path
    from ..stages.prompts import PromptsConfig
    from ..stages.synth import SynthConfig
    from .catalogue import Sources
    from .pipeline import Step

    data, synth = out / "data", out / "synth"
    per_group = math.ceil(0.45 * c.n_train)  # the biased set's majority cell (45 % of N_R at 1:9) and N_R / 4
    data_cfg = DemoDataConfig(out=data, n_train=c.n_train, n_val=c.n_val, n_test=c.n_test, size=c.size, bias="1:9",
                              seed=0)
    vocabulary = sha256_file(default_vocabulary_path())
    prompts = PromptsConfig(task=TASK, per_group=50, writer="template", seed=0, out=out / "prompts" / f"{TASK}.yaml")
    renders = {"renderer": _renderer_fingerprint(c.size), "renderer_version": str(RENDERER_VERSION),
               "vocabulary": vocabulary}
    generator = {"generator": str(sorted(make_generator("procedural", size=c.size).describe().items()))}

    def synth_step(name: str, prompt_file: Path, n: int, kind: str = "contextual") -> Step:
        cfg = SynthConfig(group="all", n=n, prompts=prompt_file, out=out / name, generator="procedural",
                          size=c.size, seed=0, prompt_kind=kind)
        return Step(("synth",), cfg, (prompt_file,), (cfg.out,), name, cost=0.3 * 4 * n, code=generator)

    steps = [
        Step(("data", "demo"), data_cfg, (), (data,), "data", cost=0.3 * (c.n_train + c.n_val + c.n_test), code=renders),
        Step(("prompts",), prompts, (), (prompts.out,), "prompts", cost=1, code={"vocabulary": vocabulary}),
        synth_step("synth", prompts.out, per_group),
    ]
    def make_synth(pipe: Any, variant: str) -> Path:
        """"plain": the plain prompt per group; "25": 25 contextual prompts per group."""
        if variant == "plain":
            step = synth_step("synth-plain", prompts.out, math.ceil(c.n_train / 4), kind="plain")
        else:
            pf = PromptsConfig(task=TASK, per_group=int(variant), writer="template", seed=0,
                               out=out / "prompts" / f"{TASK}-{variant}.yaml")
            pipe.run(Step(("prompts",), pf, (), (pf.out,), f"prompts {variant}", cost=1,
                                   code={"vocabulary": vocabulary}))
            step = synth_step(f"synth-{variant}", pf.out, math.ceil(c.n_train / 4))
        pipe.run(step)
        return step.outputs[0] / "metadata.jsonl"

    src = Sources(train=data / "train.csv", val=data / "val.csv", test=data / "test.csv", prompts=prompts.out,
                  synth=synth / "metadata.jsonl", make_synth=make_synth)
    return steps, src


def _renderer_fingerprint(size: int) -> str:
    """The demo renderer's drawing of one probe image: a renderer change that alters pixels makes the data stale
    even though its options match (a few milliseconds)."""
    import hashlib

    import numpy as np

    from ..data.demo import render_demo_image

    drawn, _ = render_demo_image(seed=0, split="train", index=0, target=1, protected=1, size=size)
    return hashlib.sha256(np.asarray(drawn).tobytes()).hexdigest()


def _sizes(c: DemoConfig) -> Any:
    from .catalogue import Sizes

    return Sizes(image_size=c.size, batch_size=c.batch_size, crop_scale=c.crop_scale, pretrain_epochs=c.pretrain_epochs,
                 pretrain_lr=c.pretrain_lr, pretrain_milestones=tuple(c.pretrain_milestones),
                 finetune_epochs=c.finetune_epochs, finetune_lr=c.finetune_lr, topk=c.topk, n_train=c.n_train, n_synth=c.n_train,
                 blocks=tuple(c.freeze_blocks), weights="none", workers=c.workers, device=c.device, cache=c.cache,
                 n_val=c.n_val, n_test=c.n_test)


def run_demo(cfg: DemoConfig, *, progress: Progress = NULL, announce: Any = None,
             studies: list[Any] | None = None, report: bool = True) -> Any:
    """Plan the chosen studies (`cfg.study`, or `studies`: `studies.Study` values made by the caller), say how much
    work they are (`announce(text)`), run them, write the report. `report=False` leaves the folder's report.md, its
    figures, commands.sh and demo.config.yaml as they are (a caller that reuses a study folder for a subset of its
    rows, as benchmarks/demo_properties.py does, must not replace the full study's report with its subset's)."""
    from .catalogue import StudiesResult, execute, parse_studies
    from .report import write_report

    from ..stages.mask import check_topk
    from ..training.models import resolve_device

    c = check(cfg).resolved()
    studies = studies or parse_studies(c.study)
    check_topk(c.topk)  # every option that can be checked is checked before the run folder is made
    resolve_device(c.device)
    started = time.perf_counter()
    out = Path(c.out).resolve()
    check_writable(out, folder=True)  # a read-only or misplaced folder is found before minutes of work
    out.mkdir(parents=True, exist_ok=True)
    shared, src = _sources(c, out)
    run = execute(out, studies, shared, src, _sizes(c), c.seeds, progress=progress, announce=announce,
                  title="aimfair demo")
    seconds = time.perf_counter() - started
    if not report:
        return StudiesResult(out=out, studies=studies, results=run.results, report=None, seconds=seconds,
                             plan=run.plan, mask_summary=run.mask_summary, config=c)
    write_resolved_config(out, "demo", c)
    run.pipe.write_commands(out / "commands.sh", "The shell commands equivalent to this demo run (made from the steps "
                            "that ran).")
    reused = len(run.pipe.reused)
    intro = (f"Offline benchmark (task {TASK}: target Smiling, protected Male, train bias 1:9), {c.seeds} seed(s), "
             f"{c.n_train} real training images at {c.size} px, studies: {', '.join(s.name for s in studies)}; wall "
             f"time {seconds / 60:.1f} min" + (f" ({reused} steps reused from an earlier run, their time not counted)."
                                                if reused else "."))
    path = write_report(out, intro=intro, studies=studies, results=run.results, mask_summary=run.mask_summary,
                        seeds=c.seeds, blocks=c.freeze_blocks, commands=run.pipe.commands())
    return StudiesResult(out=out, studies=studies, results=run.results, report=path, seconds=seconds, plan=run.plan,
                         mask_summary=run.mask_summary, config=c)
