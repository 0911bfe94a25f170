"""One prepared check for a CUDA machine: diffusers generation speed and AMP training speed.

    python benchmarks/gpu_check.py                      # on a GPU box: < 3 minutes on an H100/H200
    python benchmarks/gpu_check.py --device cpu --quick # a smoke run anywhere

1. Builds a tiny random-weight Stable Diffusion pipeline in code (the same shapes as the tests), saves it to a
   temp folder and loads it through `DiffusersGenerator` (fp16 on CUDA), then times `--images` images at
   `--size` px for each batch size: images/s of the generation loop. The tiny model measures the loop and its
   overheads (Python, scheduler, VAE decode, PIL conversion), not Stable Diffusion 2.1's UNet. It also checks that
   a seed gives the same picture whatever the batch size, and runs the `synth` stage once (files, manifest).
2. Times ResNet-18 training steps at 224 px, batch 128: fp32 vs fp16 autocast + channels_last, through
   `aimfair_cli.training.loop.train_one_epoch` (plain torch if that module is missing). Data sits on the device,
   so this is the model's speed, not the data loader's.

Prints progress lines and, last, one JSON object; with $OUT set also writes $OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_tiny_sd(folder: Path) -> Path:
    """A random-weight SD pipeline (tiny UNet/VAE/CLIP text encoder, byte-level CLIP tokenizer), as
    synth_throughput.py --tiny builds it."""
    from synth_throughput import build_pipeline  # benchmarks/ is on sys.path when this script runs

    build_pipeline("tiny", folder)
    return folder / "pipeline"


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_generation(model_dir: Path, *, device: str, dtype: str, images: int, size: int, steps: int,
                     batch_sizes: list[int]) -> dict:
    import numpy as np

    from aimfair_cli.generators.base import ImageRequest, image_seed
    from aimfair_cli.generators.diffusion import DiffusersGenerator

    t0 = time.perf_counter()
    gen = DiffusersGenerator(model=str(model_dir), steps=steps, height=size, width=size, dtype=dtype, device=device)
    load_s = time.perf_counter() - t0
    requests = [ImageRequest(f"Portrait face photo of a smiling man, variant {i}", image_seed(0, "bench", i), i)
                for i in range(images)]
    rows, first = [], {}
    for bs in batch_sizes:
        gen.generate(requests[:bs])  # warm-up: kernels, allocator, cuDNN autotune
        sync(device)
        t = time.perf_counter()
        made = []
        for i in range(0, images, bs):
            made += gen.generate(requests[i : i + bs])
        sync(device)
        seconds = time.perf_counter() - t
        first[bs] = np.asarray(made[0]).astype(int)
        rows.append({"batch_size": bs, "images": images, "seconds": round(seconds, 3),
                     "images_per_s": round(images / seconds, 2)})
        log(f"generation  batch {bs:3d}: {images / seconds:8.1f} images/s ({images} images, {seconds:.2f}s)")
    ref = first[batch_sizes[0]]
    diffs = {str(bs): int(abs(first[bs] - ref).max()) for bs in batch_sizes}
    return {"settings": gen.describe(), "load_seconds": round(load_s, 2), "runs": rows,
            "same_seed_max_pixel_diff_vs_batch_%d" % batch_sizes[0]: diffs}


def bench_synth_stage(model_dir: Path, *, device: str, dtype: str, n: int, size: int, steps: int, batch: int,
                      tmp: Path) -> dict:
    """The real `synth` stage (files, part files, manifest) on the tiny pipeline."""
    try:
        from aimfair_cli.core.manifest import read_manifest
        from aimfair_cli.core.tasks import TASKS, PromptFile, save_prompt_file
        from aimfair_cli.stages.synth import synthesize
    except ImportError as exc:
        return {"skipped": f"synth stage not available: {exc}"}
    task = TASKS["smiling_male"]
    groups = {g.name: [f"Portrait face photo of a {task.target.phrase(g.target)} {task.protected.phrase(g.protected)}."]
              for g in task.groups}
    prompts = save_prompt_file(tmp / "prompts.yaml", PromptFile(task=task, groups=groups))
    options = dict(model=str(model_dir), steps=steps, height=size, width=size, dtype=dtype, device=device)
    result = synthesize(prompts=prompts, groups=list(groups), n=n, out=tmp / "synth", generator="diffusers",
                        generator_options=options, batch_size=batch)
    rows = len(read_manifest(tmp / "synth" / "metadata.jsonl", require_protected=True))
    log(f"synth stage: {result.written} images, {result.images_per_s:.1f} images/s, manifest rows {rows}")
    return {"written": result.written, "images_per_s": round(result.images_per_s, 2), "manifest_rows": rows}


def bench_training(*, device: str, batch: int, size: int, steps: int, warmup: int) -> dict:
    import torch

    try:
        from aimfair_cli.training.loop import train_one_epoch
        from aimfair_cli.training.models import build_model
    except ImportError:
        build_model = train_one_epoch = None  # type: ignore[assignment]
    results = {"via": "aimfair_cli.training.loop.train_one_epoch" if train_one_epoch else "plain torch",
               "batch_size": batch, "image_size": size}
    images = torch.randn(batch, 3, size, size, device=device)  # [B,3,H,W], resident on the device
    targets = torch.randint(0, 2, (batch,), device=device).float()  # [B]
    batches = lambda k: [(images, targets, targets, targets) for _ in range(k)]  # noqa: E731
    for name, amp, channels_last in (("fp32", False, False), ("amp_fp16_channels_last", True, True)):
        if amp and not device.startswith("cuda"):
            continue  # fp16 autocast is the GPU path; the CPU run only smoke-tests fp32
        torch.manual_seed(0)
        if build_model is not None:
            model = build_model(weights="none")
        else:
            import torchvision

            model = torchvision.models.resnet18(num_classes=1)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(device, memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        scaler = torch.amp.GradScaler("cuda") if amp else None

        def run(k: int) -> None:
            if train_one_epoch is not None:
                train_one_epoch(model, batches(k), opt, device=device, amp=amp, scaler=scaler,
                                channels_last=channels_last)
                return
            loss_fn = torch.nn.BCEWithLogitsLoss()
            model.train()
            for x, y, _, _ in batches(k):
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    loss = loss_fn(model(x.contiguous(memory_format=fmt)).squeeze(1).float(), y)
                opt.zero_grad(set_to_none=True)
                if scaler:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()

        run(warmup)
        sync(device)
        t = time.perf_counter()
        run(steps)
        sync(device)
        seconds = time.perf_counter() - t
        results[name] = round(steps * batch / seconds, 1)
        log(f"training    {name:24s}: {steps * batch / seconds:8.1f} images/s ({steps} steps of {batch})")
    if "amp_fp16_channels_last" in results:
        results["amp_speedup"] = round(results["amp_fp16_channels_last"] / results["fp32"], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu [default: cuda]")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run that finishes in seconds")
    parser.add_argument("--images", type=int, default=64, help="images per batch-size run [default: 64]")
    parser.add_argument("--size", type=int, default=64, help="generated side in px [default: 64]")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (the generator's default) [default: 25]")
    parser.add_argument("--batch-sizes", default="1,8,32", help="[default: 1,8,32]")
    args = parser.parse_args()

    import torch

    if args.quick:
        args.images, args.size, args.steps, args.batch_sizes = 8, 32, 2, "1,4"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device visible; use --device cpu for a smoke run")
    gpu = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else None
    dtype = "fp16" if args.device.startswith("cuda") else "fp32"
    start = time.perf_counter()
    log(f"device: {gpu or platform.processor() or 'cpu'} ({args.device}), torch {torch.__version__}")
    import diffusers

    report: dict = {
        "device": args.device, "gpu_name": gpu, "cpu_threads": torch.get_num_threads(),
        "torch": str(torch.__version__), "cuda": torch.version.cuda, "diffusers": str(diffusers.__version__),
        "python": platform.python_version(), "quick": args.quick,
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_sd(Path(tmp))
        report["generation"] = bench_generation(
            model_dir, device=args.device, dtype=dtype, images=args.images, size=args.size, steps=args.steps,
            batch_sizes=[int(b) for b in args.batch_sizes.split(",")])
        report["synth_stage"] = bench_synth_stage(
            model_dir, device=args.device, dtype=dtype, n=args.images // 4 or 1, size=args.size, steps=args.steps,
            batch=max(int(b) for b in args.batch_sizes.split(",")), tmp=Path(tmp))
    if args.quick:
        report["training"] = bench_training(device=args.device, batch=8, size=64, steps=2, warmup=1)
    else:
        report["training"] = bench_training(device=args.device, batch=128, size=224, steps=30, warmup=5)
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=2)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
