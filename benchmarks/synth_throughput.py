"""Image generation speed on the paper's generator: the official setting against aimfair's, in one run.

    python benchmarks/synth_throughput.py [--device cuda] [--batches 16,24,32] [--repeats 2] [--json]
    python benchmarks/synth_throughput.py --tiny        # the same code on a tiny pipeline (CPU, tests)

Stable Diffusion 2.1 weights cannot be downloaded here, but its cost is its architecture: the pipeline is built
with SD 2.1's published component shapes (UNet 865 M parameters: blocks 320/640/1280/1280, attention head dims
5/10/20/20, cross-attention 1024, linear projections; the OpenCLIP ViT-H/14 text tower as a 23-layer, 1024-wide
CLIP text model; the standard VAE 128/256/512/512) and random weights, saved to a temp folder and loaded back the
way `aimfair synth --generator diffusers --model FOLDER` loads a model. Timed, after one untimed warm-up batch:

- official: the released AIM-Fair set-up: DDIM 50 steps, guidance 9, 512×512, fp32 weights under fp16 autocast,
  batch 15;
- aimfair: `DiffusersGenerator` defaults: DPM-Solver++ 25 steps, guidance 9, 512×512, fp16 weights, PyTorch's
  SDPA attention (diffusers' default processor), at each of --batches (the best is reported);
- aimfair + compile: the same with `--compile` (torch.compile of the UNet, channels_last), on CUDA only unless
  --compile-on-cpu.

Prints images/s, the ratio to the official setting and the hours 40,000 images would take (the paper's four
groups × 10,000). On a CPU without --tiny this would take hours; it refuses unless --force.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

PAPER_IMAGES = 40_000
PROMPT = "a photo of a smiling young man in a sunlit park, natural light"  # fits 77 byte tokens

# SD 2.1 (stabilityai/stable-diffusion-2-1) component shapes, and a tiny stand-in with the same block types.
ARCH = {
    "sd21": {
        "unet": dict(block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), layers_per_block=2,
                     cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True, sample_size=96,
                     down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=32),
        "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=768,
                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
        "text": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                     projection_dim=512, hidden_act="gelu", vocab_size=49408),
        "side": 512,
    },
    "tiny": {
        "unet": dict(block_out_channels=(8, 16), attention_head_dim=(2, 4), layers_per_block=1, cross_attention_dim=32,
                     use_linear_projection=True, sample_size=8, norm_num_groups=4,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        "vae": dict(block_out_channels=(4, 8), layers_per_block=1, norm_num_groups=2, sample_size=32,
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
        "text": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                     projection_dim=32, hidden_act="gelu", vocab_size=514),
        "side": 32,
    },
}


def _byte_vocab() -> dict[str, int]:
    """A CLIP tokenizer vocabulary of the 256 byte characters (plain and word-final) and the two specials: every
    prompt still becomes the 77 positions the pipeline pads to, which is what the text encoder's cost depends on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    return vocab


def build_pipeline(arch: str, folder: Path) -> dict[str, int]:
    """Save a random-weight pipeline of `arch` to `folder`; return parameter counts per component."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    spec = ARCH[arch]
    vocab_dir = folder / "vocab"
    vocab_dir.mkdir(parents=True)
    (vocab_dir / "vocab.json").write_text(json.dumps(_byte_vocab()))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(vocab_dir), model_max_length=77)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, **spec["unet"]).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **spec["vae"]).eval()
    text = CLIPTextModel(CLIPTextConfig(max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                        **spec["text"])).eval()
    # SD 2.1's noise schedule (v-prediction)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if arch != "tiny":
        pipe.to(torch.float16)  # half the bytes to write; the official row upcasts to fp32 on load
    pipe.save_pretrained(folder / "pipeline")
    return {name: sum(p.numel() for p in m.parameters()) for name, m in (("unet", unet), ("vae", vae),
                                                                          ("text_encoder", text))}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(make_batch, batch: int, repeats: int, device: str) -> float:
    """Images/s over `repeats` timed batches after one untimed warm-up batch."""
    make_batch(batch)  # warm-up: kernels, allocator, compilation
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        make_batch(batch)
    _sync(device)
    return batch * repeats / (time.perf_counter() - t0)


def official(folder: Path, *, device: str, side: int, batch: int, repeats: int) -> float:
    """The released set-up: fp32 weights, DDIM 50 steps, guidance 9, fp16 autocast on CUDA (fp32 on CPU)."""
    import diffusers
    import torch

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    cuda = device.startswith("cuda")

    def make(n: int) -> None:
        ctx = torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext()
        with ctx, torch.inference_mode():
            pipe(prompt=[PROMPT] * n, num_inference_steps=50, guidance_scale=9.0, height=side, width=side,
                 output_type="pil")

    speed = _time(make, batch, repeats, device)
    return speed


def aimfair(folder: Path, *, device: str, side: int, batches: list[int], repeats: int,
            compile: bool = False) -> tuple[float, int]:
    """aimfair's generator at its defaults (DPM++ 25, guidance 9, fp16 on CUDA): (best images/s, its batch)."""
    import torch

    from aimfair_cli.generators.base import ImageRequest
    from aimfair_cli.generators.diffusion import DiffusersGenerator

    gen = DiffusersGenerator(model=str(folder), height=side, width=side, device=device, compile=compile)
    best = (0.0, 0)
    for batch in batches:
        def make(n: int) -> None:
            gen.generate([ImageRequest(prompt=PROMPT, seed=i, index=i) for i in range(n)])

        try:
            speed = _time(make, batch, repeats, device)
        except Exception as exc:  # out of memory at a large batch: keep the best so far
            if "out of" not in str(exc).lower():
                raise
            torch.cuda.empty_cache()
            break
        best = max(best, (speed, batch))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto [default: auto]")
    parser.add_argument("--tiny", action="store_true", help="a tiny pipeline of the same block types (CPU, tests)")
    parser.add_argument("--batches", default=None, help="aimfair batch sizes to try [default: 8,16,24,32; tiny: 4,15]")
    parser.add_argument("--official-batch", type=int, default=15, help="[default: 15, the released code's]")
    parser.add_argument("--repeats", type=int, default=None, help="timed batches per setting [default: 2; tiny: 1]")
    parser.add_argument("--compile-on-cpu", action="store_true", help="also time torch.compile on a CPU")
    parser.add_argument("--force", action="store_true", help="run the full architecture on a CPU (hours)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    import torch

    from aimfair_cli.core.hub import resolve_device

    device = resolve_device(args.device)
    arch = "tiny" if args.tiny else "sd21"
    if arch == "sd21" and not device.startswith("cuda") and not args.force:
        sys.exit("the SD 2.1 architecture takes hours on a CPU: use a GPU, --tiny, or --force")
    side = ARCH[arch]["side"]
    batches = [int(b) for b in (args.batches or ("4,15" if args.tiny else "8,16,24,32")).split(",")]
    repeats = args.repeats or (1 if args.tiny else 2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="aimfair-synth-bench-") as tmp:
        params = build_pipeline(arch, Path(tmp))
        folder = Path(tmp) / "pipeline"
        base = official(folder, device=device, side=side, batch=args.official_batch, repeats=repeats)
        cuda = device.startswith("cuda")
        rows.append({"name": f"official: DDIM 50, fp32{' + fp16 autocast' if cuda else ''}", "scheduler": "ddim",
                     "steps": 50,
                     "batch": args.official_batch, "img_s": base})
        speed, batch = aimfair(folder, device=device, side=side, batches=batches, repeats=repeats)
        rows.append({"name": f"aimfair default: DPM++ 25, {'fp16' if cuda else 'fp32'} weights, SDPA",
                     "scheduler": "dpm++", "steps": 25,
                     "batch": batch, "img_s": speed})
        if device.startswith("cuda") or args.compile_on_cpu:
            speed, batch = aimfair(folder, device=device, side=side, batches=[batch], repeats=repeats, compile=True)
            rows.append({"name": "aimfair + torch.compile (UNet, channels_last)", "scheduler": "dpm++", "steps": 25,
                         "batch": batch, "img_s": speed})
    for row in rows:
        row["ratio"] = round(row["img_s"] / base, 2)
        row["hours_40k"] = round(PAPER_IMAGES / row["img_s"] / 3600, 2)
        row["img_s"] = round(row["img_s"], 3)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    result = {"device": name, "arch": arch, "side": side, "params": params, "rows": rows,
              "default_ratio": rows[1]["ratio"]}
    if args.json:
        print(json.dumps(result))
        return
    counts = ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in params.items())
    print(f"{name}; {arch} architecture ({counts} parameters), {side}x{side}")
    print(f"{'setting':<48}{'batch':>6}{'img/s':>10}{'ratio':>8}{'h / 40k':>9}")
    for row in rows:
        print(f"{row['name']:<48}{row['batch']:>6}{row['img_s']:>10.3f}{row['ratio']:>8.2f}{row['hours_40k']:>9.2f}")


if __name__ == "__main__":
    main()
