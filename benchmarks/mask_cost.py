"""How much a cheaper mask costs: time of `aimfair mask` and overlap with the full-data mask as --max-samples
shrinks, in one run.

    python benchmarks/mask_cost.py [--n-train 2000] [--size 48] [--work DIR]

Builds a small offline run (demo data, procedural synthetic images, a briefly pretrained model), then computes
the k = 55 mask with every set capped at 100 %, 50 %, 25 % and 10 % of the real training set. Prints, per cap,
the seconds taken, the speed-up against the full mask measured in the same run, the number of tensors selected
and the Jaccard overlap |A ∩ B| / |A ∪ B| of the selected tensors with the full mask's, at k = 55 and, from the
same scores, at a smaller k (40 by default), where a noisier ranking shows more.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=2000, help="real training images [default: 2000]")
    parser.add_argument("--size", type=int, default=48, help="image side in px [default: 48]")
    parser.add_argument("--epochs", type=int, default=3, help="pretraining epochs [default: 3]")
    parser.add_argument("--topk", default="55")
    parser.add_argument("--fractions", default="1,0.5,0.25,0.1")
    parser.add_argument("--small-k", type=int, default=40,
                        help="also compare the selections at this k, from the same scores [default: 40]")
    parser.add_argument("--seeds", type=int, default=1, help="mask seeds per fraction (subsets differ) [default: 1]")
    parser.add_argument("--work", type=Path, default=None, help="folder to keep the run in [default: a temp folder]")
    args = parser.parse_args()

    from aimfair_cli.core.tasks import TASKS, find_prompt_file
    from aimfair_cli.data.demo import make_demo_dataset
    from aimfair_cli.masking.selection import select
    from aimfair_cli.stages.mask import MaskConfig, run_mask
    from aimfair_cli.stages.pretrain import PretrainConfig, run_pretrain
    from aimfair_cli.stages.synth import synthesize

    work = args.work or Path(tempfile.mkdtemp(prefix="mask-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    make_demo_dataset(out=work / "data", n_train=args.n_train, n_val=500, n_test=500, size=args.size)
    task = TASKS["smiling_male"]
    synthesize(prompts=find_prompt_file(task.name), groups=[g.name for g in task.groups],
               n=math.ceil(0.45 * args.n_train), out=work / "synth", generator="procedural",
               generator_options={"size": args.size})
    model = work / "pretrain.safetensors"
    run_pretrain(PretrainConfig(train=work / "data/train.csv", val=work / "data/val.csv", out=model,
                                epochs=args.epochs, lr=0.05, milestones=(), image_size=args.size, workers=0,
                                weights="none"))
    print(f"set-up (data, synth, pretrain {args.epochs} epochs): {time.perf_counter() - t0:.0f}s", file=sys.stderr)

    fractions = [float(f) for f in args.fractions.split(",")]
    # Warm-up (imports, allocator, page cache), so the first timed row does not pay for it.
    run_mask(MaskConfig(model=model, real=work / "data/train.csv", synth=work / "synth/metadata.jsonl",
                        out=work / "mask-warmup.safetensors", topk=args.topk, max_samples=8, workers=0))
    rows = []
    for frac in fractions:
        for seed in range(args.seeds):
            cap = None if frac >= 1 else max(8, round(frac * args.n_train))
            cfg = MaskConfig(model=model, real=work / "data/train.csv", synth=work / "synth/metadata.jsonl",
                             out=work / f"mask-{frac:g}-{seed}.safetensors", topk=args.topk, max_samples=cap,
                             workers=0, seed=seed)
            started = time.perf_counter()
            result = run_mask(cfg)
            # k = 55 of 62 always keeps at least 48 tensors, which hides disagreement; the saved scores also
            # give the selection at a smaller k without new gradients.
            rows.append((frac, seed, cap or args.n_train, time.perf_counter() - started, result.mask.selected,
                         select(result.scores, args.small_k)))
    full = rows[0]
    print(f"\nmask cost, k={args.topk}, N_R={args.n_train}, {args.size}px, CPU; baseline = 100 % (seed 0), same run")
    print(f"{'fraction':>9} {'seed':>4} {'images/set':>10} {'seconds':>8} {'speed-up':>8} {'selected':>8} {'jaccard':>8} "
          f"{'k=' + str(args.small_k) + ' sel.':>9} {'jaccard':>8}")
    for frac, seed, n, seconds, selected, small in rows:
        print(f"{frac:>9.0%} {seed:>4} {n:>10} {seconds:>8.1f} {full[3] / seconds:>7.2f}x {len(selected):>8} "
              f"{jaccard(selected, full[4]):>8.3f} {len(small):>9} {jaccard(small, full[5]):>8.3f}")


if __name__ == "__main__":
    main()
