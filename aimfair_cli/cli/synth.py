"""`aimfair synth`: render N images per group from a prompt file (procedural offline, or Stable Diffusion)."""

from __future__ import annotations

import json

from ..core import dist
from ..stages.synth import SynthConfig, run_synth
from . import console
from .options import command



@command("synth", SynthConfig)
def synth(cfg: SynthConfig, *, json_out: bool) -> None:
    """Render N images for each group and (re)build OUT/metadata.jsonl (file_name, target, protected, group,
    prompt, seed, generator, index), readable by Hugging Face `load_dataset("imagefolder", data_dir=OUT)`.

    Interrupted runs (Ctrl-C, kill -9) resume where they stopped with no duplicate and no gap. Short form in a
    run folder: `aimfair synth --group smiling_male --n 10000` finds the task and its prompt file by itself.
    """
    result, prompt_file, groups = run_synth(cfg, progress=console.make_progress())
    if not dist.is_main():
        return
    if json_out:
        console.out.print_json(json.dumps({**result.to_dict(), "prompts": str(prompt_file), "groups": groups}))
        return
    listed = ", ".join(f"{g} {c}" for g, c in result.present.items())
    console.out.print(
        f"wrote {result.written} images in {result.seconds:.1f}s ({result.images_per_s:.1f} images/s), "
        f"{result.skipped} already there; {result.manifest} lists {sum(result.present.values())} images ({listed})",
        markup=False,
    )
