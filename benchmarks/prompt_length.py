"""Does a long prompt cost render time? Seconds per image against prompt length, on the tiny diffusers pipeline.

    python benchmarks/prompt_length.py [--lengths 60,320,1000,26000] [--repeats 3] [--json]

Issue 29 found render time growing far faster than the prompt (26 KB 1 s, 520 KB 34 s, 1 MB over 120 s), so
prompts are bounded at `MAX_PROMPT_CHARS` characters where they are read and written. This prints, for each length,
the median seconds per image and the ratio to the shortest length, measured in the same run: lengths up to the bound should
cost what a short prompt costs (the text encoder keeps 77 tokens); longer ones are what the bound refuses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

PHRASE = "portrait photo of a smiling man in a sunlit park, "


def seconds_per_image(gen, text: str, repeats: int) -> float:
    from aimfair_cli.generators.base import ImageRequest, image_seed

    gen.generate([ImageRequest(text, image_seed(0, "warm-up", 0), 0)])
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        gen.generate([ImageRequest(text, image_seed(0, "bench", i), i)])
        times.append(time.perf_counter() - started)
    return statistics.median(times)  # the median: a busy machine's stray slow image does not move it


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="60,320,1000,26000", help="prompt lengths in characters, comma-separated")
    ap.add_argument("--repeats", type=int, default=7, help="timed images per length (the median is reported)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    import diffusers
    import transformers

    from aimfair_cli.core.tasks import MAX_PROMPT_CHARS
    from aimfair_cli.generators.diffusion import DiffusersGenerator
    from synth_throughput import build_pipeline

    for lib in (diffusers, transformers):  # CLIP's truncation warning would print each long prompt
        lib.logging.set_verbosity_error()
    lengths = sorted(int(v) for v in args.lengths.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        build_pipeline("tiny", Path(tmp))
        gen = DiffusersGenerator(model=str(Path(tmp) / "pipeline"), steps=4, height=32, width=32, device="cpu")
        rows = [{"chars": n, "seconds_per_image": seconds_per_image(gen, (PHRASE * (n // len(PHRASE) + 1))[:n],
                                                                    args.repeats)} for n in lengths]
    base = rows[0]["seconds_per_image"]
    for r in rows:
        r["ratio"] = r["seconds_per_image"] / base
        r["within_bound"] = r["chars"] <= MAX_PROMPT_CHARS
    if args.json:
        print(json.dumps({"bound": MAX_PROMPT_CHARS, "rows": rows}))
        return 0
    print(f"render time by prompt length (tiny pipeline, 32 px, 4 steps; bound {MAX_PROMPT_CHARS} characters)")
    for r in rows:
        note = "" if r["within_bound"] else "  (refused by the bound)"
        print(f"  {r['chars']:>7} chars  {r['seconds_per_image']:.3f} s/image  {r['ratio']:.2f}x{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
