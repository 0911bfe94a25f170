"""`aimfair synth`: render N images per group from a prompt file (procedural offline, or Stable Diffusion)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import dist, layout
from ..config import resolve
from ..errors import UsageError
from ..stages.synth import DEFAULTS, resolve_inputs, synthesize
from . import console
from .options import ConfigOpt, DeviceOpt, JsonOpt, TaskOpt, VerboseOpt

# Generator options: forwarded to make_generator only when given, so each generator applies its own defaults
# and rejects the options that are not its own ("option --steps applies to --generator diffusers only").
GENERATOR_OPTIONS = ("size", "model", "steps", "scheduler", "guidance", "height", "width", "save_size",
                     "negative_prompt", "dtype", "compile", "device")
MSG_NO_GROUP = "--group is required (a group such as smiling_male, several separated by commas, or all)"
MSG_NO_N = "--n is required (images per group)"

_DIFFUSERS = "--generator diffusers only."


def synth(
    group: Annotated[
        Optional[str],
        typer.Option(help="Group to render (e.g. smiling_male), several separated by commas, or all (every group of "
                     "the task). Required."),
    ] = None,
    n: Annotated[
        Optional[int],
        typer.Option("--n", "-n", help="Images per group: indices 0..N-1. A rerun makes only the missing ones; a "
                     "larger N extends; a smaller N deletes nothing. Under torchrun write -n (torchrun takes --n for "
                     "its own --nnodes/--nproc-per-node). Required."),
    ] = None,
    prompts: Annotated[
        Optional[Path],
        typer.Option(help=f"Prompt file. [default: {layout.PROMPTS_DIR}/<task>.yaml in the run folder, else the "
                     "shipped one]", dir_okay=False),
    ] = None,
    task: TaskOpt = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help=f"Output folder: <group>/000000.png ... and metadata.jsonl. "
                     f"[default: {layout.SYNTH_DIR}]", file_okay=False),
    ] = None,
    generator: Annotated[
        Optional[str],
        typer.Option(help="procedural (offline, CPU, reads prompts/vocabulary.yaml) or diffusers (any diffusers "
                     "text-to-image pipeline). [default: procedural]"),
    ] = None,
    seed: Annotated[
        Optional[int],
        typer.Option("--seed", help="Base seed; image i of group G gets a seed derived from (seed, G, i), so reruns, "
                     "resumes, shards and batch sizes give the same bytes. [default: 0]"),
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per generator call. [default: 8]")] = None,
    prompt_kind: Annotated[
        Optional[str],
        typer.Option("--prompt-kind", help="contextual (the file's prompt list) or plain (its single plain prompt, "
                     "the paper's baseline). [default: contextual]"),
    ] = None,
    prompt_order: Annotated[
        Optional[str],
        typer.Option("--prompt-order", help="round-robin (image i uses prompt i mod P) or random (drawn with an RNG "
                     "seeded by the image's seed). [default: round-robin]"),
    ] = None,
    shard: Annotated[
        Optional[str],
        typer.Option(help="Do only indices i with i mod N == I, as I/N (e.g. 0/2), to split work across machines. "
                     "Under torchrun the ranks split it further by themselves. [default: everything]"),
    ] = None,
    size: Annotated[Optional[int], typer.Option(help="Image side in pixels, --generator procedural only. [default: 64]")] = None,
    model: Annotated[
        Optional[str],
        typer.Option(help="Hub id or local folder of the pipeline, " + _DIFFUSERS
                     + " [default: stabilityai/stable-diffusion-2-1]"),
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps, " + _DIFFUSERS + " [default: 25]")] = None,
    scheduler: Annotated[
        Optional[str],
        typer.Option(help="dpm++ (DPM-Solver++ multistep) or ddim (the official set-up is ddim with --steps 50), "
                     + _DIFFUSERS + " [default: dpm++]"),
    ] = None,
    guidance: Annotated[
        Optional[float], typer.Option(help="Classifier-free guidance scale (official: 9.0), " + _DIFFUSERS + " [default: 9.0]")
    ] = None,
    height: Annotated[Optional[int], typer.Option(help="Generated height in pixels, " + _DIFFUSERS + " [default: 512]")] = None,
    width: Annotated[Optional[int], typer.Option(help="Generated width in pixels, " + _DIFFUSERS + " [default: 512]")] = None,
    save_size: Annotated[
        Optional[int],
        typer.Option("--save-size", help="Resize saved images to this square size (the official code saves 224), "
                     + _DIFFUSERS + " [default: keep the generated size]"),
    ] = None,
    negative_prompt: Annotated[
        Optional[str], typer.Option("--negative-prompt", help="Negative prompt, " + _DIFFUSERS + " [default: none]")
    ] = None,
    dtype: Annotated[
        Optional[str], typer.Option(help="fp16, bf16 or fp32, " + _DIFFUSERS + " [default: fp16 on CUDA, fp32 on CPU]")
    ] = None,
    compile_: Annotated[
        Optional[bool],
        typer.Option("--compile/--no-compile", help="torch.compile the UNet, " + _DIFFUSERS + " [default: off]"),
    ] = None,
    device: DeviceOpt = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Render N images for each group and (re)build OUT/metadata.jsonl (file_name, target, protected, group,
    prompt, seed, generator, index), readable by Hugging Face `load_dataset("imagefolder", data_dir=OUT)`.

    Interrupted runs (Ctrl-C, kill -9) resume where they stopped with no duplicate and no gap. Short form in a
    run folder: `aimfair synth --group smiling_male --n 10000` finds the task and its prompt file by itself.
    """
    defaults = {**DEFAULTS, "group": None, "n": None, "prompts": None, "task": None, "out": None, "shard": None,
                **{k: None for k in GENERATOR_OPTIONS}}
    explicit = dict(group=group, n=n, prompts=prompts, task=task, out=out, generator=generator, seed=seed,
                    batch_size=batch_size, prompt_kind=prompt_kind, prompt_order=prompt_order, shard=shard, size=size,
                    model=model, steps=steps, scheduler=scheduler, guidance=guidance, height=height, width=width,
                    save_size=save_size, negative_prompt=negative_prompt, dtype=dtype, compile=compile_, device=device)
    opts = resolve("synth", explicit, defaults, config_file=config)
    if not opts["group"]:
        raise UsageError(MSG_NO_GROUP)
    if opts["n"] is None:
        raise UsageError(MSG_NO_N)
    console.setup_logging(verbose)
    prompt_file, groups = resolve_inputs(group=str(opts["group"]), prompts=opts["prompts"], task=opts["task"])
    target = Path(opts["out"]) if opts["out"] else layout.SYNTH_DIR
    result = synthesize(
        prompts=prompt_file,
        groups=groups,
        n=int(opts["n"]),
        out=target,
        generator=opts["generator"],
        generator_options={k: opts[k] for k in GENERATOR_OPTIONS if opts[k] is not None},
        seed=opts["seed"],
        batch_size=opts["batch_size"],
        prompt_kind=opts["prompt_kind"],
        prompt_order=opts["prompt_order"],
        shard=opts["shard"],
        progress=console.RichProgress(),
    )
    if not dist.is_main():
        return
    if json_:
        console.out.print_json(json.dumps({**result.to_dict(), "prompts": str(prompt_file), "groups": groups}))
        return
    listed = ", ".join(f"{g} {c}" for g, c in result.present.items())
    console.out.print(
        f"wrote {result.written} images in {result.seconds:.1f}s ({result.images_per_s:.1f} images/s), "
        f"{result.skipped} already there; {result.manifest} lists {sum(result.present.values())} images ({listed})",
        markup=False,
    )
