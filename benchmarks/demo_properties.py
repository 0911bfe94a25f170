"""Does the offline benchmark make a fair testbed for AIM-Fair? Measure its three properties in one run.

    .venv/bin/python benchmarks/demo_properties.py [--size 64] [--n-train 4000] [--epochs 4] [--balanced-epochs 6]
                                                   [--seed 0] [--work DIR]

(a) bias: an ERM ResNet-18 trained on the demo's biased train split has a worst-group accuracy on the test
    split well below its overall accuracy (wanted: a gap of at least 15 points);
(b) domain gap: a model trained only on balanced procedural (synthetic-style) images scores lower on the
    real-style test split than one trained on as many balanced real-style images (wanted: >= 5 points);
(c) prompt diversity: images from the contextual template prompts are more diverse than images from the
    plain prompt (distinct attribute combinations; mean pairwise pixel distance), and a model trained on
    them beats one trained on plain-prompt images on the real test split.

Every model: torchvision ResNet-18 from random init, one logit, BCE, SGD momentum 0.9 (lr 0.02, batch 32,
x0.1 for the last epoch), trained with the library's own loop (aimfair_cli.training.loop.fit) on crops keeping
60-100 % of the picture plus flips, checkpoint chosen by accuracy on the real val split. The ERM model of (a)
trains for the demo's pretraining schedule (--epochs 4), the biased model the demo repairs. The models of (b)
and (c) train on balanced sets, where no shortcut speeds up the start: from random init a balanced real-style
set can sit at chance for two epochs, so they get --balanced-epochs 6, the same for all three.
Everything is seeded; the numbers are printed, nothing is asserted. CPU only, a few minutes per model.

    .venv/bin/python benchmarks/demo_properties.py --regime [--seeds 3] [--quick] [--n-train N] [--n-val N] [--n-test N] [--size PX]
                                                   [--work DIR] [--json]

(d) the paper's regime: the rows that set the benchmark — ERM on biased real, balanced synthetic only,
    supplementation, repairing (the non-method rows of the `strategies` study, paper Tab. 3) and full fine-tuning on
    the balanced synthetic set (the premise AIM-Fair builds on) — run by `aimfair demo`'s own pipeline at the demo's
    sizes over --seeds, printed beside the paper's CelebA Smiling/Male numbers, and every target of
    `benchmarks/regime.py` checked on the mean and on each seed against that seed's ERM: ERM ACC − WST >= 12 and EO
    in 15–30; synthetic only 1–6 ACC points below ERM, WST >= ERM's + 3, STD and EO <= half of ERM's;
    supplementation and repairing EO >= two thirds of ERM's and ACC >= ERM's − 2; full fine-tuning WST >= ERM's + 3
    and EO <= half of ERM's. A table marks each target ✓/✗ per seed; the exit status is 1 when any fails, and each
    failure is named. --errors adds where each row's errors sit: its accuracy on the real test faces of each
    expression kind (a broad open smile, a closed-lip smile, a neutral face, a talking one, an ambiguous one) and
    gender, pooled over the seeds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aimfair_cli.fairness.cells import CELLS
from aimfair_cli.data.demo import make_demo_dataset, render_demo_image
from aimfair_cli.generators.base import ImageRequest, image_seed
from aimfair_cli.generators.procedural import ProceduralGenerator
from aimfair_cli.core.manifest import read_manifest, write_manifest
from aimfair_cli.core.tasks import TASKS
from aimfair_cli.writers.template import TemplateWriter, plain_prompt

TASK = TASKS["smiling_male"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- data --------------------------------------------------------------------------------------------------


def balanced_real(out: Path, *, n: int, size: int, seed: int) -> Path:
    """n real-style images, n/4 per cell, drawn like the demo's (a split of its own, so no overlap)."""
    rows = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    cells = [cell for cell in CELLS for _ in range(n // 4)]
    for i, (t, p) in enumerate(cells):
        img, _ = render_demo_image(seed=seed, split="balanced", index=i, target=t, protected=p, size=size)
        name = f"images/{i:06d}.png"
        img.save(out / name)
        rows.append({"file_name": name, "target": t, "protected": p})
    return write_manifest(out / "train.csv", rows)


def synthetic(out: Path, *, kind: str, n: int, size: int, seed: int) -> tuple[Path, list, list[str]]:
    """n procedural images, n/4 per group, from the contextual template prompts or the plain prompt."""
    gen = ProceduralGenerator(size=size)
    writer = TemplateWriter()
    rows, attrs, groups = [], [], []
    (out / "images").mkdir(parents=True, exist_ok=True)
    for group in TASK.groups:
        prompts = writer.write(TASK, group, 50, seed=seed) if kind == "contextual" else [plain_prompt(TASK, group)]
        for i in range(n // 4):
            req = ImageRequest(prompts[i % len(prompts)], image_seed(seed, group.name, i), i)  # round-robin
            img = gen.generate([req])[0]
            name = f"images/{group.name}_{i:06d}.png"
            img.save(out / name)
            rows.append({"file_name": name, "target": group.target, "protected": group.protected, "group": group.name})
            attrs.append(gen.attributes(req))
            groups.append(group.name)
    return write_manifest(out / "train.csv", rows), attrs, groups


def diversity(folder: Path, attrs: list, groups: list[str], *, sample: int = 200, seed: int = 0) -> dict[str, float]:
    """Per group, averaged: distinct rendered attribute combinations, and mean pairwise RMS pixel distance
    (pixels in [0, 1]) over `sample` images."""
    from PIL import Image

    manifest = read_manifest(folder / "train.csv")
    rng = np.random.default_rng(seed)
    combos, dists = [], []
    for g in sorted(set(groups)):
        idx = [i for i, gg in enumerate(groups) if gg == g]
        combos.append(len({attrs[i].key for i in idx}))
        pick = rng.choice(idx, size=min(sample, len(idx)), replace=False)
        x = np.stack([np.asarray(Image.open(manifest.image_path(manifest.rows[i])), dtype=np.float32).ravel() / 255
                      for i in pick])  # [S, H*W*3]
        sq = (x**2).sum(1)
        d2 = np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None) / x.shape[1]
        iu = np.triu_indices(len(pick), 1)
        dists.append(float(np.sqrt(d2[iu]).mean()))
    return {"combinations": float(np.mean(combos)), "pixel_distance": float(np.mean(dists))}


# ---- training ----------------------------------------------------------------------------------------------


def train_and_test(name: str, train_csv: Path, val_csv: Path, test_csv: Path, args, *, epochs: int) -> dict:
    """Train one model and test it; with --work, a finished model's result is kept and reused on a rerun."""
    import json

    from aimfair_cli.render import RENDERER_VERSION

    settings = {k: getattr(args, k) for k in ("size", "n_train", "n_val", "n_test", "lr", "batch_size", "seed")}
    settings.update(epochs=epochs, renderer=RENDERER_VERSION)
    cache = args.work / "results" / f"{name}.json" if args.work else None
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("settings") == settings:
            log(f"  {name}: reusing {cache}")
            return {**saved["result"], "cells": {tuple(map(int, k.split(","))): v for k, v in saved["cells"].items()}}
    result = _train_and_test(name, train_csv, val_csv, test_csv, args, epochs=epochs)
    if cache is not None:
        from aimfair_cli.core.fsio import atomic_write_text

        cells = {f"{t},{p}": v for (t, p), v in result["cells"].items()}
        body = {"settings": settings, "result": {k: v for k, v in result.items() if k != "cells"}, "cells": cells}
        atomic_write_text(cache, json.dumps(body, indent=1))
    return result


def _train_and_test(name: str, train_csv: Path, val_csv: Path, test_csv: Path, args, *, epochs: int) -> dict:
    from torchvision import transforms as T

    from aimfair_cli.training.images import (
        MEAN,
        STD,
        ImageDataset,
        build_transform,
        make_loader,
    )
    from aimfair_cli.fairness.metrics import group_metrics
    from aimfair_cli.training.models import build_model, resolve_device
    from aimfair_cli.training.loop import OptimConfig, fit, predict, seed_everything

    seed_everything(args.seed)
    model = build_model(weights="none")
    # Training crops keep at least 60 % of the picture: at 64 px the default RandomResizedCrop scale (8 %-100 %)
    # often cuts the mouth out, and a from-scratch model then learns nothing in a few epochs.
    train_tf = T.Compose([T.RandomResizedCrop(args.size, scale=(0.6, 1.0), ratio=(0.9, 1.1)), T.RandomHorizontalFlip(),
                          T.ToTensor(), T.Normalize(list(MEAN), list(STD))])
    load = lambda csv, train: make_loader(
        ImageDataset(read_manifest(csv), train_tf if train else build_transform(args.size, train=False)),
        batch_size=args.batch_size, shuffle=train, workers=args.workers, seed=args.seed)
    started = time.perf_counter()
    milestones = (max(1, epochs - 1),)
    device = resolve_device(args.device)
    result = fit(model, load(train_csv, True), load(val_csv, False), device=device,
                 optim=OptimConfig(lr=args.lr, epochs=epochs, milestones=milestones), description=name)
    pred = predict(model, load(test_csv, False), device=device)
    m = group_metrics(pred.targets, pred.protected, pred.preds)
    seconds = time.perf_counter() - started
    log(f"  {name}: acc {m.acc:.3f} wst {m.wst:.3f} (best epoch {result.best_epoch}, {seconds:.0f} s)")
    return {"acc": m.acc, "wst": m.wst, "eo": m.eo,
            "cells": {c: m.cell_acc(*c) for c in CELLS}, "seconds": seconds}


# ---- main --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=None, help="image side (default 64; (d): the demo's)")
    ap.add_argument("--n-train", type=int, default=None,
                    help="images per training set, every model (default 4000; (d): the demo's real training images)")
    ap.add_argument("--n-val", type=int, default=None, help="val images (default 500; (d): the demo's)")
    ap.add_argument("--n-test", type=int, default=None, help="test images (default 1000; (d): the demo's)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the ERM model of (a), the demo's pretraining")
    ap.add_argument("--balanced-epochs", type=int, default=6, help="epochs of the models of (b) and (c)")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto",
                    help="auto, cpu, cuda or cuda:N; (d) reuses a study folder's runs only under the device it used")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="abc", help="which properties to measure (subset of abc)")
    ap.add_argument("--regime", action="store_true", help="(d): the non-method rows of paper Tab. 3 over --seeds")
    ap.add_argument("--seeds", type=int, default=3, help="(d) only: training seeds")
    ap.add_argument("--quick", action="store_true", help="(d) only: the demo's --quick epochs (plumbing, not numbers)")
    ap.add_argument("--json", action="store_true", help="(d) only: print the rows as one JSON object")
    ap.add_argument("--errors", action="store_true",
                    help="(d) only: also each row's accuracy on the real test faces by how their expression was "
                         "drawn (open or closed-lip smile, neutral, talking, ambiguous) and gender, over the seeds")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the rendered data and each model's result here; a rerun reuses finished models "
                         "(default: a temp folder, removed at the end)")
    args = ap.parse_args(argv)
    if args.regime:
        return regime(args)
    args.size, args.n_train, args.n_test = args.size or 64, args.n_train or 4000, args.n_test or 1000
    args.n_val = args.n_val or 500

    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="  %(message)s", stream=sys.stderr)  # per-epoch val accuracy
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="aimfair-demo-properties-"))
    try:
        log(f"rendering into {work}")
        t0 = time.perf_counter()
        demo = make_demo_dataset(out=work / "demo", n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                                 size=args.size, seed=args.seed)
        val, test = demo.paths["val"], demo.paths["test"]
        sets: dict[str, Path] = {}
        div: dict[str, dict[str, float]] = {}
        if "b" in args.only:
            sets["real_balanced"] = balanced_real(work / "real_balanced", n=args.n_train, size=args.size, seed=args.seed)
        if "b" in args.only or "c" in args.only:
            sets["contextual"], attrs, groups = synthetic(work / "contextual", kind="contextual", n=args.n_train,
                                                          size=args.size, seed=args.seed)
            div["contextual"] = diversity(work / "contextual", attrs, groups, seed=args.seed)
        if "c" in args.only:
            sets["plain"], attrs, groups = synthetic(work / "plain", kind="plain", n=args.n_train, size=args.size,
                                                     seed=args.seed)
            div["plain"] = diversity(work / "plain", attrs, groups, seed=args.seed)
        render_s = time.perf_counter() - t0
        log(f"rendered in {render_s:.0f} s; training")

        res: dict[str, dict] = {}
        if "a" in args.only:
            res["erm_biased"] = train_and_test("erm_biased", demo.paths["train"], val, test, args, epochs=args.epochs)
        for name, csv in sets.items():
            res[name] = train_and_test(name, csv, val, test, args, epochs=args.balanced_epochs)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    total = time.perf_counter() - started
    print(f"demo properties (size {args.size}, {args.n_train} training images per model, {args.epochs} epochs "
          f"for ERM and {args.balanced_epochs} on balanced sets, "
          f"seed {args.seed}; test split {args.n_test} images, cells (0,0)/(0,1)/(1,0)/(1,1) ~ 27/23/35/15 %)")
    if "a" in res or "erm_biased" in res:
        r = res["erm_biased"]
        gap = 100 * (r["acc"] - r["wst"])
        cells = "  ".join(f"{c}: {100 * r['cells'][c]:.1f}" for c in CELLS)
        print(f"(a) bias: ERM on biased real train: acc {100 * r['acc']:.1f}, worst group {100 * r['wst']:.1f}, "
              f"gap {gap:.1f} points (want >= 15) -> {'holds' if gap >= 15 else 'FAILS'}")
        print(f"    per cell (target,protected) accuracy: {cells}")
    if "real_balanced" in res:
        real, syn = res["real_balanced"]["acc"], res["contextual"]["acc"]
        gap = 100 * (real - syn)
        print(f"(b) domain gap: balanced real-style acc {100 * real:.1f} vs balanced procedural acc {100 * syn:.1f}: "
              f"{gap:.1f} points lower (want >= 5) -> {'holds' if gap >= 5 else 'FAILS'}")
    if "plain" in res:
        c, p = div["contextual"], div["plain"]
        print(f"(c) diversity per group: distinct attribute combinations contextual {c['combinations']:.0f} vs plain "
              f"{p['combinations']:.0f}; mean pairwise pixel distance contextual {c['pixel_distance']:.3f} vs plain "
              f"{p['pixel_distance']:.3f} -> {'holds' if c['combinations'] > p['combinations'] and c['pixel_distance'] > p['pixel_distance'] else 'FAILS'}")
        ca, pa = res["contextual"]["acc"], res["plain"]["acc"]
        print(f"    real test acc: contextual-prompt model {100 * ca:.1f} vs plain-prompt model {100 * pa:.1f} "
              f"({100 * (ca - pa):+.1f} points) -> {'holds' if ca > pa else 'FAILS'}; worst group "
              f"{100 * res['contextual']['wst']:.1f} vs {100 * res['plain']['wst']:.1f}")
    print(f"total time {total / 60:.1f} min (rendering {render_s:.0f} s; training "
          + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in res.items()) + ")")
    return 0


def regime(args: argparse.Namespace) -> int:
    """(d): the non-method rows of the strategies study and full fine-tuning through the demo's pipeline, each
    target of `regime.TARGETS` checked on the mean and on each seed; exits 1 naming every failure."""
    import json

    from aimfair_cli.experiments.demo import DemoConfig, run_demo
    from aimfair_cli.experiments.catalogue import FULL, STUDIES, Study
    from regime import PAPER, ROWS, check_regime, failures_text, mean_values, percent, table

    rows = tuple(r for r in STUDIES["strategies"].rows if r.name in PAPER and r.name != FULL.name) + (FULL,)
    study = Study("regime", "paper Tab. 3, the rows that do not use the method", rows)
    work = args.work or Path(tempfile.mkdtemp(prefix="aimfair-regime-"))
    # the demo's sizes (default or --quick preset) unless --n-train (real images), --n-test or --size say otherwise
    cfg = DemoConfig(out=work, seeds=args.seeds, quick=args.quick, device=args.device, study="strategies",
                     n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, size=args.size)
    started = time.perf_counter()
    result = run_demo(cfg, studies=[study], announce=log, report=False)  # a study folder keeps its report
    runs = {r.name: [percent(m) for m in r.metrics] for r in result.results["regime"]}
    checks = check_regime(runs)
    failures = failures_text(checks)
    errors = expression_errors(work, args.seeds, device=args.device) if args.errors else None
    seconds = time.perf_counter() - started
    if failures:
        log(f"regime: {len(failures)} target(s) fail: " + "; ".join(failures))
    if args.json:
        print(json.dumps({"seeds": args.seeds, "quick": args.quick, "seconds": round(seconds, 1),
                          "rows": {n: {"ours": mean_values(runs[n]), "seeds": runs[n],
                                       "paper": dict(zip(("acc", "wst", "eo", "std"), PAPER[n]))} for n in ROWS},
                          "checks": [{"row": c.target.row, "target": c.target.text, "where": c.where,
                                      "holds": c.holds} for c in checks],
                          "failures": failures, **({"errors": errors} if errors is not None else {})}))
        return 1 if failures else 0
    print(f"(d) the paper's regime: {args.seeds} seed(s){' at --quick sizes' if args.quick else ''}, "
          f"{seconds / 60:.1f} min; ACC / WST / EO / STD in %, mean over seeds (each seed below)")
    print(f"    {'row':<12} {'ours':>27}   {'paper (CelebA)':>27}")
    for name in ROWS:
        o, p = mean_values(runs[name]), PAPER[name]
        print(f"    {name:<12} " + " ".join(f"{o[k]:6.1f}" for k in ("acc", "wst", "eo", "std")) + "   "
              + " ".join(f"{v:6.1f}" for v in p))
        for i, seed in enumerate(runs[name]):
            print(f"    {'  seed ' + str(i):<12} " + " ".join(f"{seed[k]:6.1f}" for k in ("acc", "wst", "eo", "std")))
    print()
    print("\n".join(table(checks)))
    if errors is not None:
        print_errors(errors, args.seeds)
    if failures:
        print("\n" + "\n".join(f"FAILS: {f}" for f in failures))
        return 1
    print("\nevery target holds on the mean and on each seed")
    return 0


# the checkpoint each row of the regime leaves in SEED_FOLDER
CHECKPOINTS = {"pretrained": "pretrain.safetensors", "synthetic": "scratch-synthetic.safetensors",
               "supplement": "scratch-supplement.safetensors", "repair": "scratch-repair.safetensors",
               "full": "full.safetensors"}
GENDERS = ("female", "male")


def expression_errors(work: Path, seeds: int, *, device: str) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{row: {expression kind: {gender: {"n": faces per seed, "acc": % right over the seeds}}}} on the real test
    split of the regime's data in `work`, each face's kind replayed from the draws that rendered it."""
    import csv

    import yaml

    from aimfair_cli.data.demo import EXPRESSION_KINDS, demo_expression_kind
    from aimfair_cli.stages.evaluate import evaluate_checkpoint

    data = work / "data"
    opts = yaml.safe_load((data / "data_demo.config.yaml").read_text(encoding="utf-8"))["data_demo"]
    kind = {r["file_name"]: demo_expression_kind(seed=opts["seed"], split="test", index=int(Path(r["file_name"]).stem),
                                                 target=r["target"], protected=r["protected"],
                                                 ambiguous=opts["ambiguous"])
            for r in read_manifest(data / "test.csv").rows}
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="aimfair-errors-") as tmp:
        for row, name in CHECKPOINTS.items():
            tally = {(k, g): [0, 0] for k in EXPRESSION_KINDS for g in GENDERS}  # [faces, right]
            for seed in range(seeds):
                preds = Path(tmp) / f"{row}-{seed}.csv"
                evaluate_checkpoint(model=work / f"seed{seed}" / name, data=data / "test.csv", predictions=preds,
                                    workers=0, device=device)
                with preds.open(newline="", encoding="utf-8") as fh:
                    for r in csv.DictReader(fh):
                        t = tally[kind[r["file_name"]], GENDERS[int(r["protected"])]]
                        t[0] += 1
                        t[1] += int(r["pred"]) == int(r["target"])
            out[row] = {k: {g: {"n": tally[k, g][0] // seeds,
                                "acc": 100 * tally[k, g][1] / tally[k, g][0] if tally[k, g][0] else float("nan")}
                            for g in GENDERS} for k in EXPRESSION_KINDS}
    return out


def print_errors(errors: dict, seeds: int) -> None:
    kinds = list(next(iter(errors.values())))
    first = next(iter(errors.values()))
    print(f"\n    accuracy on the real test faces by how the expression was drawn, % over {seeds} seed(s), "
          "female / male")
    print(f"    {'':<12} " + "  ".join(f"{k:>18}" for k in kinds))
    print(f"    {'faces/seed':<12} " + "  ".join(f"{first[k]['female']['n']:>8} / {first[k]['male']['n']:<7}"
                                             for k in kinds))
    for row, by_kind in errors.items():
        print(f"    {row:<12} " + "  ".join(f"{by_kind[k]['female']['acc']:8.1f} / {by_kind[k]['male']['acc']:<7.1f}"
                                         for k in kinds))


if __name__ == "__main__":
    raise SystemExit(main())
