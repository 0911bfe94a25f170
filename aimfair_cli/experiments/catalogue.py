"""The paper's experiments (§4.5) as studies: named sets of rows, each row a way to get a model, run per seed.

    main        the quick comparison `aimfair demo` runs by default: AIM-Fair against full fine-tuning, linear
                probing, a random mask of its size and the opposite criterion (the single-block baselines, which
                choose on labelled validation data, are in `partial`);
    strategies  Tab. 3: ERM on biased real, balanced synthetic only, supplementation, repairing, linear probing,
                full fine-tuning, AIM-Fair;
    partial     Tab. 4: best random selection (40/55/70/85 %), best update-one-block, best freeze-one-block,
                AIM-Fair with the cosine score, AIM-Fair, the opposite criterion (a control);
    prompts     Tab. 5: trained on balanced synthetic only, from 1 plain prompt, 25 or 50 contextual prompts per group;
    topk        Fig. 5: AIM-Fair for k in 40, 45, 50, 55, 60;
    bias-ratio  Tab. 6: the synthetic-biased set of the mask at 4:6, 3:7, 2:8, 1:9 and auto;
    sota        Tab. 1: ERM, JTT, CVaR DRO, LfF, EIIL, GroupDRO (an oracle with training group labels) and AIM-Fair,
                each paired with AIM-Fair;
    sample-ratio  Tab. 2: the same rows at 50, 25 and 10 % of the real training set, paired with AIM-Fair at each.

Every study also runs full fine-tuning, the reference each row is paired with seed by seed (sota and sample-ratio:
AIM-Fair, `Study.reference`). A row is a function
of a `Bench` (one seed's steps: pretrain, compose, mask, finetune, evaluate), so rows shared by several studies
(ERM, AIM-Fair, full fine-tuning) are one step each, run once. "Best" rows choose on the validation set by
worst-group accuracy, which uses group labels AIM-Fair does not need. A new study is a `STUDIES` entry.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core.errors import UsageError
from .pipeline import Pipeline, Step

REFERENCE = "full"  # the row every other is paired with, seed by seed: full fine-tuning
# The paper's Tab. 3 (ways to train: ERM, synthetic only, supplementation, repairing, linear, full, AIM-Fair). Its
# CLI name is `strategies`; in the code it is TAB3_STUDY, and "strategy" means a tensor selection
# (masking/strategies.py).
TAB3_STUDY = "strategies"
MSG_UNKNOWN_STUDY = "unknown study '{name}' (known: {known}, or all)"
MSG_PROMPTS_NEEDS_SYNTH = "--study prompts needs synthetic images from other prompt files; run it on the offline " \
    "benchmark (aimfair demo --study prompts)"


@dataclass
class Sizes:
    """What every training of a study uses (from `aimfair demo`'s or `aimfair study`'s options)."""

    image_size: int
    batch_size: int
    crop_scale: float
    pretrain_epochs: int
    pretrain_lr: float
    pretrain_milestones: tuple[int, ...]
    finetune_epochs: int
    finetune_lr: float
    topk: str
    n_train: int  # real training images
    n_synth: int  # balanced synthetic images of each fine-tuning and from-scratch synthetic set
    blocks: tuple[str, ...]  # tried by the best single-block baselines
    weights: str = "none"
    workers: int = 0
    device: str = "auto"
    cache: bool = True  # the decoded-image cache of pretrain, mask and finetune
    n_val: int = 1000  # images in the val split and in the test split, for the estimate
    n_test: int = 1000


@dataclass
class Sources:
    """The files every seed reads: real manifests, the prompt file and the synthetic pool (with the steps that
    make more synthetic sets, for the prompts study; None where a study cannot make them)."""

    train: Path
    val: Path
    test: Path
    prompts: Path
    synth: Path  # the synthetic pool's manifest
    make_synth: Callable[[Pipeline, str], Path] | None = None  # (pipe, "plain" or "25") -> its manifest, via steps


class Bench:
    """One seed's steps. Each method returns the file a step writes, running the step through the pipeline (which
    reuses it when its record matches)."""

    def __init__(self, pipe: Pipeline, src: Sources, sizes: Sizes, folder: Path, seed: int) -> None:
        self.pipe, self.src, self.z, self.folder, self.seed = pipe, src, sizes, folder, seed
        self.details: dict[str, str] = {}
        self._ratios: dict[int, Bench] = {}

    def _common(self) -> dict[str, Any]:
        return dict(batch_size=self.z.batch_size, workers=self.z.workers, device=self.z.device, cache=self.z.cache,
                    seed=self.seed)

    def pretrain(self, name: str = "pretrain", train: Path | None = None, n: int | None = None,
                 method: str = "erm") -> Path:
        """A model trained from the initial weights on `train` (the real set; `n` images, for the estimate) with
        `method` (`pretrain --method`, its hyper-parameters at their defaults)."""
        from ..methods import METHODS
        from ..stages.pretrain import PretrainConfig

        train, n = train or self.src.train, n or self.z.n_train
        cfg = PretrainConfig(train=train, val=self.src.val, out=self.folder / f"{name}.safetensors",
                             epochs=self.z.pretrain_epochs, lr=self.z.pretrain_lr,
                             milestones=tuple(self.z.pretrain_milestones), image_size=self.z.image_size,
                             crop_scale=self.z.crop_scale, weights=self.z.weights, method=method, **self._common())
        cost = self.z.pretrain_epochs * (n + self.z.n_val / 3) * METHODS[method].cost(cfg)
        self.pipe.run(Step(("pretrain",), cfg, (train, self.src.val), (cfg.out,), f"pretrain {name} seed {self.seed}",
                           cost=cost))
        return cfg.out

    def at_ratio(self, percent: int) -> "Bench":
        """This seed's steps on `percent` % of the real training set (drawn with the seed: `data compose --kind
        subsample`), the balanced synthetic sets scaled alike (N_S = N_R), in `ratio-<percent>/`."""
        from ..data.compose import ComposeConfig

        if percent not in self._ratios:
            n = max(8, round(self.z.n_train * percent / 100))
            cfg = ComposeConfig(kind="subsample", real=self.src.train, out=self.folder / "sets" / f"real-{percent}.csv",
                                n=n, seed=self.seed)
            self.pipe.run(Step(("data", "compose"), cfg, (cfg.real,), (cfg.out,),
                               f"compose real-{percent} seed {self.seed}", cost=1))
            sizes = dataclasses.replace(self.z, n_train=n, n_synth=max(4, round(self.z.n_synth * percent / 100)))
            self._ratios[percent] = Bench(self.pipe, dataclasses.replace(self.src, train=cfg.out), sizes,
                                          self.folder / f"ratio-{percent}", self.seed)
        return self._ratios[percent]

    def compose(self, kind: str, synth: Path | None = None, name: str | None = None) -> Path:
        from ..data.compose import ComposeConfig

        name = name or kind
        cfg = ComposeConfig(kind=kind, real=self.src.train, synth=synth or self.src.synth,
                            out=self.folder / "sets" / f"{name}.csv", n=self.z.n_synth, seed=self.seed)
        inputs = (cfg.synth,) if kind == "synthetic" else (cfg.real, cfg.synth)
        self.pipe.run(Step(("data", "compose"), cfg, inputs, (cfg.out,), f"compose {name} seed {self.seed}", cost=1))
        return cfg.out

    def mask(self, **options: Any) -> Path:
        """The mask at the study's k with the mask stage's defaults, or with `options` (topk, score, bias_ratio);
        options equal to those are dropped, so the same mask is one step. A mask that differs only in k is
        selected from the stored scores of the study's mask (`mask --from-mask`: no gradient passes)."""
        from ..core.options import default_of
        from ..stages.mask import MaskConfig

        base = {"topk": self.z.topk, **{f.name: default_of(f) for f in dataclasses.fields(MaskConfig)
                                         if f.name in ("score", "bias_ratio")}}
        options = {k: v for k, v in options.items() if str(v) != str(base[k])}
        source = self.mask() if set(options) == {"topk"} else None
        cfg = MaskConfig(model=self.pretrain(), real=self.src.train, synth=self.src.synth,
                         out=self.folder / f"mask{_suffix(options)}.safetensors", crop_scale=self.z.crop_scale,
                         from_mask=source, **{**base, **self._common(), **options})
        inputs = (cfg.model, source) if source is not None else (cfg.model, cfg.real, cfg.synth)
        self.pipe.run(Step(("mask",), cfg, inputs, (cfg.out,), f"{cfg.out.stem} seed {self.seed}",
                           cost=1 if source is not None else 3 * self.z.n_train))
        return cfg.out

    def mask_path(self) -> Path:
        """Where `mask()` (the study's k, the mask stage's defaults) writes."""
        return (self.folder / "mask.safetensors").resolve()

    def aimfair(self, **options: Any) -> Path:
        """AIM-Fair: fine-tune the tensors of `mask(**options)`."""
        mask = self.mask(**options)
        return self.finetune("aimfair" + mask.stem.removeprefix("mask"), mask=mask)

    def finetune(self, name: str, *, strategy: str | None = None, mask: Path | None = None) -> Path:
        from ..stages.finetune import FinetuneConfig

        cfg = FinetuneConfig(model=self.pretrain(), synth=self.src.synth, val=self.src.val,
                             out=self.folder / f"{name}.safetensors", mask=mask, strategy=strategy,
                             epochs=self.z.finetune_epochs, lr=self.z.finetune_lr, n_synth=self.z.n_synth,
                             crop_scale=self.z.crop_scale, **self._common())
        inputs = (cfg.model, cfg.synth, cfg.val) + ((mask,) if mask is not None else ())
        self.pipe.run(Step(("finetune",), cfg, inputs, (cfg.out,), f"finetune {name} seed {self.seed}",
                           cost=self.z.finetune_epochs * (self.z.n_synth + self.z.n_val / 3)))
        return cfg.out

    def evaluate(self, model: Path, data: Path | None = None) -> Any:
        """The model's metrics on the test set (or `data`), through an `eval --out` step."""
        from ..fairness.metrics import GroupMetrics
        from ..stages.evaluate import EvalConfig, read_eval_runs

        data = data or self.src.test
        out = model.with_name(f"{model.stem}.{data.stem}.json")
        cfg = EvalConfig(model=[str(model)], data=data, out=out, workers=self.z.workers, device=self.z.device)
        n = self.z.n_test if data == self.src.test else self.z.n_val
        self.pipe.run(Step(("eval",), cfg, (model, data), (out,), f"eval {model.stem} on {data.stem} seed {self.seed}",
                           cost=n / 3))
        if self.pipe.pending(out):  # planning, not made yet: a stand-in, so rows that choose can be planned
            return GroupMetrics(cells={c: (1, 1) for c in ((0, 0), (0, 1), (1, 0), (1, 1))})
        return read_eval_runs(out)[0]

    def best(self, candidates: Sequence[tuple[str, Callable[[], Path]]]) -> tuple[str, Path]:
        """The candidate with the best worst-group accuracy on the validation set (ties: the first)."""
        scored = []
        for label, make in candidates:
            path = make()
            scored.append((self.evaluate(path, self.src.val).wst, -len(scored), label, path))
        _, _, label, path = max(scored)
        return label, path

    def selection_ratio(self, mask: Path) -> float:
        """The share of tensors the mask selects (0.5 while planning a mask still to be made)."""
        if self.pipe.pending(mask):
            return 0.5
        from ..masking.maskfile import load_mask

        m = load_mask(mask)
        return len(m.selected) / m.total


def _suffix(options: dict[str, Any]) -> str:
    """{"topk": "40"} -> "-topk-40"; {"bias_ratio": "2:8"} -> "-bias_ratio-2-8": a file-name part per option."""
    return "".join(f"-{k}-{str(v).replace(':', '-').replace('%', 'pct')}" for k, v in sorted(options.items()))


# ---- rows ------------------------------------------------------------------------------------------------------

RowFn = Callable[[Bench], Path]


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    make: RowFn




def _random_same_ratio(b: Bench) -> Path:
    ratio = b.selection_ratio(b.mask())
    b.details["random"] = f"{ratio:.2f} of the tensors"
    return b.finetune("random", strategy=f"random:{ratio:.4f}")


def _best_of(key: str, what: str, candidates: Callable[[Bench], list[tuple[str, Callable[[], Path]]]]) -> RowFn:
    def make(b: Bench) -> Path:
        label, path = b.best(candidates(b))
        b.details[key] = f"{what} {label}"
        return path
    return make


def _freeze_candidates(b: Bench) -> list[tuple[str, Callable[[], Path]]]:
    return [(blk, lambda blk=blk: b.finetune(f"freeze-{blk}", strategy=f"freeze:{blk}")) for blk in b.z.blocks]


def _update_candidates(b: Bench) -> list[tuple[str, Callable[[], Path]]]:
    return [(blk, lambda blk=blk: b.finetune(f"update-{blk}", strategy=f"update:{blk}")) for blk in b.z.blocks]


RANDOM_RATIOS = (40, 55, 70, 85)


def _random_candidates(b: Bench) -> list[tuple[str, Callable[[], Path]]]:
    return [(f"{r} %", lambda r=r: b.finetune(f"random-{r}", strategy=f"random:{r}%")) for r in RANDOM_RATIOS]


def _from_scratch(kind: str) -> RowFn:
    def make(b: Bench) -> Path:  # sizes for the estimate; repair fills the minority cells up to the largest
        n = {"synthetic": b.z.n_synth, "supplement": b.z.n_train + b.z.n_synth, "repair": 2 * b.z.n_train}[kind]
        return b.pretrain(f"scratch-{kind}", b.compose(kind), n)
    return make


def _prompts_row(variant: str) -> RowFn:
    def make(b: Bench) -> Path:
        if variant == "50":  # the pool itself: the Tab. 3 study's synthetic-only training, run once for both
            return _from_scratch("synthetic")(b)
        if b.src.make_synth is None:
            raise UsageError(MSG_PROMPTS_NEEDS_SYNTH)
        synth = b.src.make_synth(b.pipe, variant)
        return b.pretrain(f"prompts-{variant}", b.compose("synthetic", synth, name=f"synthetic-{variant}"), b.z.n_synth)
    return make


def _topk_row(k: int) -> Row:
    return Row(f"k{k}", f"AIM-Fair k={k}", lambda b: b.aimfair(topk=str(k)))


def _ratio_row(ratio: str) -> Row:
    return Row(f"bias-{ratio.replace(':', '-')}", f"synthetic-biased {ratio}", lambda b: b.aimfair(bias_ratio=ratio))


ERM = Row("pretrained", "pretrained (ERM, biased real)", lambda b: b.pretrain())
AIMFAIR = Row("aimfair", "AIM-Fair (mask k={k})", lambda b: b.aimfair())
FULL = Row(REFERENCE, "full fine-tuning", lambda b: b.finetune("full", strategy="full"))
LINEAR = Row("linear", "linear probing (fc)", lambda b: b.finetune("linear", strategy="linear"))
OPPOSITE = Row("opposite", "opposite criterion, same k (control)",
               lambda b: b.finetune("opposite", strategy="opposite", mask=b.mask()))


@dataclass(frozen=True)
class Study:
    name: str
    title: str  # the paper's table or figure
    rows: tuple[Row, ...]
    figure: str | None = None  # "topk": metrics against k
    reference: str = REFERENCE  # the row every other is paired with (a row "x@50" with "<reference>@50")
    in_all: bool = True  # part of `--study all` (the comparison methods train many models: asked for by name)
    help: str = ""  # the study in a few words, for the `--study` help of `aimfair demo`
    offline_only: bool = False  # needs synthetic images from other prompt files: `aimfair demo` only


# the comparison methods of Tab. 1-2 (`pretrain --method`, aimfair_cli/methods/), as the paper names them
METHOD_LABELS = {"jtt": "JTT", "cvar-dro": "CVaR DRO", "lff": "LfF", "eiil": "EIIL",
                 "group-dro": "GroupDRO (oracle: training group labels)", "dfr": "DFR (validation group labels)"}
RATIOS = (50, 25, 10)  # Tab. 2: percent of the real training set


def _method_rows(at: Callable[[Bench], Bench] = lambda b: b, suffix: str = "") -> tuple[Row, ...]:
    """ERM, every comparison method and AIM-Fair, each on the Bench that `at` picks."""
    def method(m: str) -> Row:
        return Row(f"{m}{suffix}", METHOD_LABELS[m] + suffix, lambda b: at(b).pretrain(f"pretrain-{m}", method=m))
    return (Row(f"{ERM.name}{suffix}", "ERM" + suffix, lambda b: at(b).pretrain()),
            *(method(m) for m in METHOD_LABELS),
            Row(f"{AIMFAIR.name}{suffix}", "AIM-Fair" + suffix, lambda b: at(b).aimfair()))


def _ratio_rows() -> tuple[Row, ...]:
    return tuple(r for p in RATIOS for r in _method_rows(lambda b, p=p: b.at_ratio(p), f"@{p}"))


STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("main", "AIM-Fair against fine-tuning baselines", (
        ERM, AIMFAIR, FULL, LINEAR, Row("random", "random tensors, AIM-Fair's ratio", _random_same_ratio), OPPOSITE),
          help="AIM-Fair against the fine-tuning baselines"),
    Study(TAB3_STUDY, "Tab. 3: training strategies", (
        ERM, Row("synthetic", "balanced synthetic only (from scratch)", _from_scratch("synthetic")),
        Row("supplement", "data supplementation: real + balanced synthetic", _from_scratch("supplement")),
        Row("repair", "data repairing: real, minority cells filled with synthetic", _from_scratch("repair")),
        LINEAR, FULL, AIMFAIR), help="paper Tab. 3"),
    Study("partial", "Tab. 4: partial fine-tuning", (
        ERM, FULL,
        Row("random-best", "best random selection (40/55/70/85 %)", _best_of("random-best", "ratio", _random_candidates)),
        Row("update-best", "best update-one-block", _best_of("update-best", "update", _update_candidates)),
        Row("freeze-best", "best freeze-one-block", _best_of("freeze-best", "freeze", _freeze_candidates)),
        Row("cosine", "AIM-Fair, cosine score", lambda b: b.aimfair(score="cosine")),
        AIMFAIR, OPPOSITE), help="Tab. 4"),
    Study("prompts", "Tab. 5: prompt types (trained on balanced synthetic only)", (
        ERM, FULL, Row("plain", "1 plain prompt per group", _prompts_row("plain")),
        Row("contextual-25", "25 contextual prompts per group", _prompts_row("25")),
        Row("contextual-50", "50 contextual prompts per group", _prompts_row("50"))), help="Tab. 5", offline_only=True),
    Study("topk", "Fig. 5: top-k", (ERM, FULL, *(_topk_row(k) for k in (40, 45, 50, 55, 60))), figure="topk",
          help="Fig. 5"),
    Study("bias-ratio", "Tab. 6: bias ratio of the synthetic-biased set", (
        ERM, FULL, *(_ratio_row(r) for r in ("4:6", "3:7", "2:8", "1:9", "auto"))), help="Tab. 6"),
    Study("sota", "Tab. 1: AIM-Fair against the debiasing methods", _method_rows(), reference=AIMFAIR.name,
          in_all=False, help="Tab. 1: the debiasing methods"),
    Study("sample-ratio", "Tab. 2: the methods at 50, 25 and 10 % of the real training set", _ratio_rows(),
          reference=AIMFAIR.name, in_all=False, help="Tab. 2"),
)}


def _and(names: Sequence[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def demo_study_help() -> str:
    """`aimfair demo --study`: every study in a few words, and what `all` leaves out (from `STUDIES`)."""
    listed = ", ".join(f"{s.name} ({s.help})" for s in STUDIES.values())
    named = _and([s.name for s in STUDIES.values() if not s.in_all])
    return (f"Studies to run, comma-separated, or all: {listed}; all runs every one but {named} (hours each on a CPU: "
            "name them).")


def run_folder_study_help() -> str:
    """`aimfair study --study`: the studies that run on a run folder (not the offline-only ones), from `STUDIES`."""
    names = ", ".join(s.name for s in STUDIES.values() if not s.offline_only)
    named = _and([s.name for s in STUDIES.values() if not s.in_all])
    offline = _and([s.name for s in STUDIES.values() if s.offline_only])
    return (f"Studies, comma-separated: {names}; or all (every one of these but {named}, which are named; {offline} "
            "runs on the offline benchmark only).")


def parse_studies(text: str | None) -> list[Study]:
    """"topk,partial" -> those studies in the given order; "all" -> every study of AIM-Fair's ablations (not the
    comparison methods' sota and sample-ratio, which are asked for by name); None -> main."""
    if not text:
        return [STUDIES["main"]]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return [s for s in STUDIES.values() if s.in_all]
    for n in names:
        if n not in STUDIES:
            raise UsageError(MSG_UNKNOWN_STUDY.format(name=n, known=", ".join(STUDIES)))
    return [STUDIES[n] for n in dict.fromkeys(names)]


@dataclass
class RowRuns:
    """One row's test metrics over seeds (and what was chosen or fine-tuned, per seed)."""

    name: str
    label: str
    metrics: list[Any] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)
    method: str = ""  # from the checkpoints: `pretrain --method`, aimfair, or the fine-tuning strategy
    group_labels: str = "none"  # none / val / train: which group labels the row's training read
    select: str = "overall"  # the model selection criterion

    def record(self, model: Path) -> None:
        """Take method, label use and selection from the row's checkpoint (older checkpoints: ERM, none, overall)."""
        from ..training.checkpoint import read_meta

        meta = read_meta(model)
        self.method = meta.get("method") or ("erm" if meta.get("stage") == "pretrain" else self.name)
        self.group_labels, self.select = meta.get("group_labels", "none"), meta.get("select", "overall")

    def aggregate(self) -> dict[str, Any]:
        from ..fairness.metrics import aggregate

        return aggregate(self.metrics)


def run_seed(pipe: Pipeline, studies: Sequence[Study], src: Sources, sizes: Sizes, folder: Path, seed: int,
             results: dict[str, list[RowRuns]]) -> Bench:
    """Every row of every study for one seed; appends the test metrics to `results[study]`."""
    bench = Bench(pipe, src, sizes, folder, seed)
    for study in studies:
        runs = results.setdefault(study.name, [RowRuns(r.name, r.label.format(k=sizes.topk)) for r in study.rows])
        for row, rr in zip(study.rows, runs):
            model = row.make(bench)
            rr.metrics.append(bench.evaluate(model))
            if not pipe.pending(model):
                rr.record(model)
            if row.name in bench.details:
                rr.detail.append(f"seed {seed}: {bench.details[row.name]}")
    return bench


def trainings(pipe: Pipeline) -> dict[str, int]:
    """How many pretrainings and fine-tunings the pipeline holds to run."""
    return {"pretrain": sum(s.command == ("pretrain",) for s in pipe.ran),
            "finetune": sum(s.command == ("finetune",) for s in pipe.ran)}


def measure_throughput(*, image_size: int, batch_size: int, device: str, steps: int = 4, warmup: int = 2) -> float:
    """Training images per second of a ResNet-18 at this size on this device: `steps` random batches timed after
    `warmup` untimed ones (the first steps set up kernels and memory: timing them halved the estimate on a CPU)."""
    import time

    import torch

    from ..training.models import build_model, resolve_device

    dev = resolve_device(device)
    model = build_model(weights="none").to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batch = max(1, min(batch_size, 32))
    x = torch.randn(batch, 3, image_size, image_size, device=dev)
    y = torch.rand(batch, device=dev).round()
    started = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / max(time.perf_counter() - started, 1e-9)


def estimate_text(plan: Pipeline, images_per_s: float, render_s: float = 0.0) -> str:
    """"12 trainings (3 pretrainings, 9 fine-tunings) and 20 evaluations to run, 4 steps reused; about 18 min at
    140 img/s (measured)"."""
    count = trainings(plan)
    n_eval = sum(s.command == ("eval",) for s in plan.ran)
    work = sum(s.cost for s in plan.ran if s.command in {("pretrain",), ("finetune",), ("mask",), ("eval",)})
    seconds = work / max(images_per_s, 1e-9) + render_s
    total = count["pretrain"] + count["finetune"]
    return (f"{total} trainings ({count['pretrain']} pretrainings, {count['finetune']} fine-tunings) and {n_eval} "
            f"evaluations to run, {len(plan.reused)} steps reused; about {max(1, math.ceil(seconds / 60))} min at "
            f"{images_per_s:.0f} training images/s (measured now)")


@dataclass
class StudiesResult:
    """What `aimfair demo` and `aimfair study` ran: per study its rows' runs, the report, the plan's words."""

    out: Path
    studies: list[Study]
    results: dict[str, list[RowRuns]]
    report: Path | None  # None when the caller asked for no report (run_demo(report=False))
    seconds: float
    plan: str
    mask_summary: list[str] = field(default_factory=list)
    config: Any = None  # the command's resolved options

    @property
    def first_runs(self) -> list[RowRuns]:
        """The runs of the first study's rows (the main comparison by default)."""
        return self.results[self.studies[0].name]


@dataclass
class Executed:
    pipe: Pipeline
    results: dict[str, list[RowRuns]]
    mask_summary: list[str]
    plan: str


def execute(root: Path, studies: Sequence[Study], shared: Sequence[Step], src: Sources, sizes: Sizes, seeds: int, *,
            progress: Any, announce: Callable[[str], None] | None = None, title: str = "aimfair study") -> Executed:
    """Plan every step (counting what is to run), announce the work and its estimated time, then run it: the shared
    steps, then every study's rows for each seed into `root/seed<k>`."""
    import logging

    def walk(pipe: Pipeline) -> tuple[dict[str, list[RowRuns]], list[str]]:
        for step in shared:
            pipe.run(step)
        results: dict[str, list[RowRuns]] = {}
        summary = []
        for seed in range(seeds):
            bench = run_seed(pipe, studies, src, sizes, root / f"seed{seed}", seed, results)
            if not pipe.plan and bench.mask_path() in {s.outputs[0] for s in pipe.steps}:  # a study used the mask
                summary.append(selection_summary(root, bench, seed))
        return results, summary

    plan = Pipeline(root, plan=True)
    walk(plan)
    render_s = sum(s.cost for s in plan.ran if s.command in {("data", "demo"), ("synth",)}) / 300
    if plan.ran:
        ips = measure_throughput(image_size=sizes.image_size, batch_size=sizes.batch_size, device=sizes.device)
        text = estimate_text(plan, ips, render_s)
    else:
        text = f"nothing to run: all {len(plan.reused)} steps reused"
    if announce is not None:
        announce(text)
    logging.getLogger(__name__).info("%s", text)
    with progress.task(title, total=sum(s.cost for s in plan.steps) or 1) as bar:
        pipe = Pipeline(root, progress=progress, advance=lambda cost, step: bar.advance(cost, stage=step))
        results, summary = walk(pipe)
    return Executed(pipe=pipe, results=results, mask_summary=summary, plan=text)


def selection_summary(root: Path, bench: Bench, seed: int) -> str:
    """Draw the seed's Δ1/Δ2 figure (selection-seed<k>.png) and say in a line what its mask selected."""
    from ..masking.maskfile import load_mask
    from ..masking.strategies import parse_strategy, trainable_names
    from ..stages.mask import plot_selection
    from ..training.models import block_of

    path = bench.mask()
    mask = load_mask(path)
    plot_selection(root / f"selection-seed{seed}.png", mask,
                   title=f"seed {seed}: {len(mask.selected)} of {mask.total} tensors selected (k={mask.meta['k']})")
    opposite = trainable_names(list(mask.shapes), parse_strategy("opposite"), mask=mask, mask_path=path)
    selected, counts = set(mask.selected), {}
    for name in mask.shapes:
        row = counts.setdefault(block_of(name), [0, 0])
        row[0] += name in selected
        row[1] += 1
    per_block = ", ".join(f"{b} {k}/{n}" for b, (k, n) in counts.items())
    return (f"seed {seed}: {len(mask.selected)} of {mask.total} tensors selected (ratio "
            f"{len(mask.selected) / mask.total:.2f}); per block {per_block}; the opposite criterion keeps "
            f"{len(opposite)}, {len(selected & set(opposite))} of them also in AIM-Fair's mask")
