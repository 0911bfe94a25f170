"""Training throughput against the raw loop, in one run, on the same model, batch, precision and memory format.

    python benchmarks/throughput.py [--device cpu|cuda] [--image-size N] [--batch-size B] [--images N] [--json]

Measures images per second of:
- raw: forward + backward + SGD step of ResNet-18 on pre-made tensors already on the device (the limit);
- train: one epoch of aimfair's training phase as `pretrain` and `finetune` run it (`training.train_one_epoch`
  over `tensorcache.make_train_loader`), reading real image files listed in a manifest; start-up (decoding the
  images into the cache) and validation are not timed;
- mask: one of `aimfair mask`'s gradient passes (`stages.mask.mean_gradients` over its gradient loader);
- files (with --files): the training phase reading the files with PIL every epoch (`--no-cache`).

Without --data the images are made first: at 64 px or less the offline benchmark's faces at the training size
(what `aimfair demo` trains on); above, JPEGs at CelebA's aligned 178×218 (what a CelebA run reads).
AMP and channels_last follow the stages' `auto` (on for CUDA) unless --amp/--channels-last say otherwise.
Phases run in rounds (raw, train, mask, files; --rounds, default 2) and each rate is total images over total
seconds, so drift in the machine's speed weighs on every phase alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_images(folder: Path, n: int, image_size: int) -> Path:
    """A manifest of n images: demo faces at the training size (≤ 64 px) or CelebA-sized JPEGs."""
    import numpy as np
    from PIL import Image

    if image_size <= 64:
        from aimfair_cli.data.demo import make_demo_dataset

        make_demo_dataset(out=folder, n_train=n, n_val=4, n_test=4, size=image_size)
        return folder / "train.csv"
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = ["file_name,target,protected"]
    for i in range(n):
        # smooth random pictures: JPEG decode cost depends on content, noise would overstate it
        small = rng.integers(0, 256, size=(14, 12, 3), dtype=np.uint8)
        Image.fromarray(small).resize((178, 218), Image.BICUBIC).save(folder / f"images/{i:06d}.jpg", quality=95)
        lines.append(f"images/{i:06d}.jpg,{i % 2},{(i // 2) % 2}")
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    return folder / "train.csv"


def raw_loop(model, batch, *, device, amp: bool, channels_last: bool, steps: int, warmup: int):
    """(images, seconds) of `steps` training steps on one pre-made batch already on the device. The batch is a
    real augmented one, so the values (and any slow denormal arithmetic they lead to) match the other phases."""
    import torch

    from aimfair_cli.training.loop import autocast

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, y = batch[0].to(device, memory_format=fmt), batch[1].to(device)
    batch_size = len(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type) if amp and device.type == "cuda" else None
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with autocast(device, amp):
            loss = loss_fn(model(x).squeeze(1).float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    _sync(device)
    return steps * batch_size, time.perf_counter() - t0


def train_phase(model, loader, *, device, amp: bool, channels_last: bool, warmup: int, epoch: int):
    """(images, seconds) of one epoch of train_one_epoch, after `warmup` untimed batches of another epoch."""
    import itertools

    import torch

    from aimfair_cli.training.images import set_epoch
    from aimfair_cli.training.loop import train_one_epoch

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type) if amp and device.type == "cuda" else None
    train_one_epoch(model, list(itertools.islice(iter(loader), warmup)), opt, device=device, amp=amp, scaler=scaler,
                    channels_last=channels_last)  # warm-up: allocator, kernels, worker start
    set_epoch(loader, epoch)
    _sync(device)
    t0 = time.perf_counter()
    train_one_epoch(model, loader, opt, device=device, amp=amp, scaler=scaler, channels_last=channels_last)
    _sync(device)
    return _count(loader), time.perf_counter() - t0


def _count(loader) -> int:
    return len(loader.dataset) if hasattr(loader, "dataset") else len(loader.cached)


def mask_pass(model, loader, *, device, amp: bool, channels_last: bool):
    from aimfair_cli.stages.mask import mean_gradients

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _sync(device)
    t0 = time.perf_counter()
    mean_gradients(model, loader, state=state, device=device, amp=amp, channels_last=channels_last)
    _sync(device)
    return _count(loader), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto [default: auto]")
    parser.add_argument("--image-size", type=int, default=64, help="training size in px [default: 64]")
    parser.add_argument("--batch-size", type=int, default=32, help="[default: 32]")
    parser.add_argument("--images", type=int, default=None,
                        help="images in the timed epoch [default: 1024 on CPU, 20000 on CUDA]")
    parser.add_argument("--steps", type=int, default=None, help="raw-loop steps [default: as many as the epoch]")
    parser.add_argument("--crop-scale", type=float, default=0.6, help="[default: 0.6, the demo's]")
    parser.add_argument("--workers", type=int, default=2,
                        help="loader workers for --files [default: 2, as pretrain/finetune/mask]")
    parser.add_argument("--amp", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all phases, summed [default: 2]")
    parser.add_argument("--files", action="store_true", help="also time the training phase reading files (PIL)")
    parser.add_argument("--data", type=Path, default=None, help="a manifest to read instead of made images")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    import torch

    from aimfair_cli.core.manifest import read_manifest
    from aimfair_cli.training.images import MEAN, STD, pass_order, row_key
    from aimfair_cli.training.loop import seed_everything
    from aimfair_cli.training.models import build_model, resolve_device
    from aimfair_cli.training.tensorcache import make_train_loader

    device = resolve_device(args.device)
    amp = device.type == "cuda" if args.amp == "auto" else args.amp == "on"
    channels_last = device.type == "cuda" if args.channels_last == "auto" else args.channels_last == "on"
    n_images = args.images or (20000 if device.type == "cuda" else 1024)
    steps = args.steps or max(1, n_images // args.batch_size)
    warmup = 3 if device.type == "cpu" else 20

    with tempfile.TemporaryDirectory(prefix="aimfair-throughput-") as tmp:
        manifest_path = args.data or make_images(Path(tmp) / "data", n_images, args.image_size)
        manifest = read_manifest(manifest_path)
        seed_everything(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = build_model(weights="none").to(device, memory_format=fmt)
        common = dict(image_size=args.image_size, crop_scale=args.crop_scale, mean=MEAN, std=STD,
                      batch_size=args.batch_size, seed=0, workers=args.workers, device=device)
        loader = make_train_loader(manifest, cache=True, **common)  # decodes: start-up, not timed
        order = pass_order([row_key(r) for r in manifest.rows], 0)
        mask_loader = make_train_loader(manifest, cache=True, order=order, **common)
        speed = dict(amp=amp, channels_last=channels_last)
        first = next(iter(loader))  # the raw loop's pre-made batch
        file_loader = make_train_loader(manifest, cache=False, **common) if args.files else None

        # Rounds of raw, train, mask (, files): a machine whose speed drifts slows every phase alike.
        totals: dict[str, list[float]] = {}
        raw_runs = []
        for r in range(args.rounds):
            phases = {
                "raw": lambda: raw_loop(model, first, device=device, steps=steps, warmup=warmup, **speed),
                "train": lambda: train_phase(model, loader, device=device, warmup=warmup, epoch=r + 1, **speed),
                "mask": lambda: mask_pass(model, mask_loader, device=device, **speed),
            }
            if args.files:
                phases["files"] = lambda: train_phase(model, file_loader, device=device, warmup=warmup, epoch=r + 1,
                                                      **speed)
            for key, fn in phases.items():
                n, seconds = fn()
                t = totals.setdefault(key, [0.0, 0.0])
                t[0] += n
                t[1] += seconds
                if key == "raw":
                    raw_runs.append(round(n / seconds, 1))
    speeds = {k: n / s for k, (n, s) in totals.items()}
    raw = speeds["raw"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    result = {"device": name, "image_size": args.image_size, "batch_size": args.batch_size, "amp": amp,
              "channels_last": channels_last, "images": len(manifest.rows), "rounds": args.rounds,
              "raw": round(raw, 1), "raw_runs": raw_runs, "train": round(speeds["train"], 1),
              "train_ratio": round(speeds["train"] / raw, 3), "mask": round(speeds["mask"], 1),
              "mask_ratio": round(speeds["mask"] / raw, 3)}
    if args.files:
        result.update(files=round(speeds["files"], 1), files_ratio=round(speeds["files"] / raw, 3))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{name}, {args.image_size} px, batch {args.batch_size}, amp {amp}, channels_last {channels_last}, "
          f"{len(manifest.rows)} images")
    print(f"{'phase':<28}{'img/s':>9}{'ratio':>8}")
    labels = {"raw": "raw loop (pre-made tensors)", "train": "train (cache)", "mask": "mask gradient pass (cache)",
              "files": "train (files, PIL)"}
    for key, v in speeds.items():
        print(f"{labels[key]:<28}{v:>9.1f}{v / raw:>8.3f}")
    print(f"raw loop per round: {' / '.join(str(x) for x in raw_runs)} img/s")


if __name__ == "__main__":
    main()
