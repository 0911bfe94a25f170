"""`aimfair synth --generator diffusers` on a tiny random-weight Stable Diffusion pipeline built here.

The pipeline (UNet, VAE, CLIP text encoder and a byte-level CLIP tokenizer whose vocabulary files the test
writes) is saved once per session with save_pretrained to a temp folder and loaded back through --model, so
the real load path is exercised: 32x32 images, 2 steps, CPU. Nothing is fetched from a hub.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aimfair_cli.core.manifest import read_manifest
from aimfair_cli.core.tasks import TASKS, PromptFile, save_prompt_file
from aimfair_cli.generators.base import ImageRequest, image_seed, make_generator

pytest.importorskip("diffusers")

TASK = TASKS["smiling_male"]
GROUPS = ["smiling_male", "not_smiling_female"]
UNKNOWN_ID = "aimfair-test/no-such-model"
# Dropped from subprocess environments: offline switches (the tests set their own) and proxies (which could
# answer for the closed local port the Hub is pointed at).
DROPPED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
               "https_proxy", "all_proxy")


def _clip_byte_vocab() -> dict[str, int]:
    """CLIP's byte-level units: 256 byte characters, the same with the end-of-word mark, and two specials."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    return vocab  # 514 tokens


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny_sd")
    vocab_dir = root / "vocab"
    vocab_dir.mkdir()
    (vocab_dir / "vocab.json").write_text(json.dumps(_clip_byte_vocab()))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")  # no merges: every byte is its own token
    tokenizer = CLIPTokenizer.from_pretrained(str(vocab_dir), model_max_length=77)
    assert len(tokenizer) == 514

    torch.manual_seed(0)
    unet = UNet2DConditionModel(  # shapes as in diffusers' own fast tests
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    # .eval() everywhere: modules built in train mode would reload (in eval mode) with different outputs.
    pipe = StableDiffusionPipeline(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(),
                                   tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    model_dir = root / "pipeline"
    pipe.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory) -> Path:
    groups = {g.name: [f"Portrait face photo of a {TASK.target.phrase(g.target)} {TASK.protected.phrase(g.protected)}"
                       f" with {d}." for d in ("curly hair", "glasses", "freckles")] for g in TASK.groups}
    path = tmp_path_factory.mktemp("prompts") / "smiling_male.yaml"
    save_prompt_file(path, PromptFile(task=TASK, groups=groups, made_by={"writer": "test"}))
    return path


def synth(tiny_sd: Path, prompt_file: Path, out: Path, *extra: str, n: int = 3, batch: int = 1):
    from aimfair_cli.cli.app import app

    args = ["synth", "--generator", "diffusers", "--model", str(tiny_sd), "--prompts", str(prompt_file),
            "--group", ",".join(GROUPS), "--n", str(n), "--out", str(out), "--batch-size", str(batch),
            "--steps", "2", "--height", "32", "--width", "32", "--device", "cpu", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def pixels(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)  # [H, W, 3]


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.png"))}


@pytest.fixture(scope="session")
def reference(tiny_sd, prompt_file, tmp_path_factory) -> Path:
    """Three images per group, made one at a time (batch size 1): the bytes every other run is compared to."""
    out = tmp_path_factory.mktemp("synth") / "reference"
    synth(tiny_sd, prompt_file, out)
    return out


def test_manifest_is_valid_and_describes_each_image(reference, tiny_sd):
    manifest = read_manifest(reference / "metadata.jsonl", require_protected=True)
    assert len(manifest) == 6
    for row in manifest.rows:
        group = TASK.group(row["group"])
        assert (row["target"], row["protected"]) == (group.target, group.protected)
        assert row["seed"] == image_seed(0, row["group"], row["index"])
        assert row["generator"] == "diffusers"
        assert row["file_name"] == f"{row['group']}/{row['index']:06d}.png"
        image = manifest.image_path(row)
        assert image.is_file() and pixels(image).shape == (32, 32, 3)
    config = (reference / "synth.config.yaml").read_text()
    for fact in ("StableDiffusionPipeline", "DPMSolverMultistepScheduler", "dpm++", str(tiny_sd), "float32"):
        assert fact in config


def test_each_image_is_reproducible(reference, tiny_sd, prompt_file, tmp_path):
    synth(tiny_sd, prompt_file, tmp_path / "again")
    assert files(tmp_path / "again") == files(reference)
    # ...and the seed matters: other seeds give other pictures.
    synth(tiny_sd, prompt_file, tmp_path / "seed1", "--seed", "1")
    a, b = pixels(reference / "smiling_male/000000.png"), pixels(tmp_path / "seed1/smiling_male/000000.png")
    assert abs(a - b).mean() > 5


def test_batch_size_does_not_change_which_image_a_seed_gives(reference, tiny_sd, prompt_file, tmp_path):
    synth(tiny_sd, prompt_file, tmp_path / "batched", batch=3)
    batched, single = files(tmp_path / "batched"), files(reference)
    assert batched.keys() == single.keys()
    for name in single:
        # Same noise, same picture; batched matrix products may round one grey level differently in a few pixels.
        diff = abs(pixels(tmp_path / "batched" / name) - pixels(reference / name))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, name


def test_rerun_resumes_without_duplicates_or_gaps(reference, tiny_sd, prompt_file, tmp_path):
    out = tmp_path / "resume"
    synth(tiny_sd, prompt_file, out, n=2)
    (out / "not_smiling_female/000001.png").unlink()  # as if killed while writing it
    result = synth(tiny_sd, prompt_file, out, n=3)
    assert result.stdout.startswith("wrote 3 images")  # index 2 of both groups, and the lost one
    assert files(out) == files(reference)
    rows = read_manifest(out / "metadata.jsonl", require_protected=True).rows
    assert sorted((r["group"], r["index"]) for r in rows) == sorted((g, i) for g in GROUPS for i in range(3))


def test_two_shards_make_the_same_set_as_one_run(reference, tiny_sd, prompt_file, tmp_path):
    out = tmp_path / "sharded"
    synth(tiny_sd, prompt_file, out, "--shard", "1/2")
    partial = read_manifest(out / "metadata.jsonl", require_protected=True)
    assert sorted(r["index"] for r in partial.rows) == [1, 1]
    synth(tiny_sd, prompt_file, out, "--shard", "0/2")
    assert files(out) == files(reference)
    rows = read_manifest(out / "metadata.jsonl", require_protected=True).rows
    assert [(r["group"], r["index"]) for r in rows] == sorted((g, i) for g in GROUPS for i in range(3))


def test_generator_directly(tiny_sd):
    gen = make_generator("diffusers", model=str(tiny_sd), steps=2, height=32, width=32, save_size=16,
                         scheduler="ddim", negative_prompt="blurry", device="cpu")
    images = gen.generate([ImageRequest("a smiling man", 7, 0), ImageRequest("a smiling man", 7, 1)])
    assert [im.size for im in images] == [(16, 16), (16, 16)]
    assert images[0].tobytes() == images[1].tobytes()  # same seed and prompt, same image, whatever its position
    info = gen.describe()
    assert info["scheduler_class"] == "DDIMScheduler" and info["source"] == "folder"
    assert info["dtype"] == "float32" and info["device"] == "cpu" and info["save_size"] == 16
    assert gen.generate([]) == []


@pytest.mark.parametrize("options, message", [
    ({"size": 64}, "option --size applies to --generator procedural only"),
    ({"scheduler": "plms"}, "unknown scheduler 'plms' (known: dpm++, ddim, euler, euler-a, pipeline)"),
    ({"dtype": "fp8"}, "unknown dtype 'fp8' (known: fp16, bf16, fp32)"),
    ({"height": 30}, "--height and --width must be positive multiples of 8, got 30x512"),
    ({"steps": 0}, "--steps must be at least 1, got 0"),
    ({"model": "./no/such/folder"}, "model folder not found: ./no/such/folder"),
])
def test_bad_options_fail_before_loading(options, message):
    from aimfair_cli.core.errors import AimfairError

    with pytest.raises(AimfairError) as err:
        make_generator("diffusers", **options)
    assert str(err.value) == message


def test_a_folder_that_is_not_a_pipeline(tmp_path):
    from aimfair_cli.core.errors import GeneratorError

    with pytest.raises(GeneratorError) as err:
        make_generator("diffusers", model=str(tmp_path))
    assert str(err.value) == f"{tmp_path} is not a diffusers pipeline folder (no model_index.json)"


@pytest.mark.parametrize("part, damage", [("unet/diffusion_pytorch_model.safetensors", "truncate"),
                                          ("vae/diffusion_pytorch_model.safetensors", "garbage"),
                                          ("text_encoder/config.json", "garbage"),
                                          ("model_index.json", "garbage")])
def test_a_damaged_pipeline_folder_is_one_line(tiny_sd, prompt_file, tmp_path, part, damage):
    """A truncated or overwritten file inside a pipeline folder (an interrupted copy) is one Error line naming the
    model, with nothing written."""
    import shutil

    from aimfair_cli.cli.app import app

    model = tmp_path / "pipeline"
    shutil.copytree(tiny_sd, model)
    target = model / part
    target.write_bytes(target.read_bytes()[:1000] if damage == "truncate" else b"{not json nor safetensors")
    result = CliRunner().invoke(app, ["synth", "--generator", "diffusers", "--model", str(model), "--prompts",
                                      str(prompt_file), "--group", "smiling_male", "--n", "1", "--out",
                                      str(tmp_path / "out")], env={"AIMFAIR_DEBUG": ""})
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and str(model) in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:") or "Traceback" in line]


def test_unknown_model_with_hf_hub_offline_fails_with_one_line(prompt_file, tmp_path, monkeypatch):
    from aimfair_cli.cli.app import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["synth", "--generator", "diffusers", "--model", UNKNOWN_ID, "--prompts",
                                      str(prompt_file), "--group", "smiling_male", "--n", "1", "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 1
    assert _error_lines(result.stderr) == [
        f"Error: model '{UNKNOWN_ID}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: download it "
        f"on a machine with network (`hf download {UNKNOWN_ID}`) or pass a local folder"
    ]


def test_unknown_model_without_network_fails_fast_with_one_line(prompt_file, tmp_path):
    """HF_HUB_OFFLINE unset and the Hub unreachable (HF_ENDPOINT points at a closed local port, so this holds
    on machines with network too): one line, no traceback. Run as a real process so huggingface_hub reads
    the environment fresh."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"), AIMFAIR_DEBUG="0")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "from aimfair_cli.cli.app import main; main()", "synth", "--generator", "diffusers",
         "--model", UNKNOWN_ID, "--prompts", str(prompt_file), "--group", "smiling_male", "--n", "1",
         "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 1, proc.stderr
    assert _error_lines(proc.stderr) == [
        f"Error: model '{UNKNOWN_ID}' is not in the local Hugging Face cache and the Hub cannot be reached: "
        f"pre-download it (`hf download {UNKNOWN_ID}`) and set HF_HUB_OFFLINE=1, or pass a local folder"
    ]
    print(f"unknown model id, Hub unreachable: failed in {elapsed:.1f}s (whole process)")


@pytest.mark.slow
def test_a_cached_model_loads_without_network(tiny_sd, prompt_file, tmp_path):
    """A Hub id already in the HF cache works on a machine whose Hub is unreachable, HF_HUB_OFFLINE unset."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--aimfair-test--tiny-sd"
    shutil.copytree(tiny_sd, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", "from aimfair_cli.cli.app import main; main()", "synth", "--generator", "diffusers",
         "--model", "aimfair-test/tiny-sd", "--prompts", str(prompt_file), "--group", "smiling_male", "--n", "1",
         "--out", str(out), "--steps", "2", "--height", "32", "--width", "32", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "smiling_male/000000.png").is_file()
    config = (out / "synth.config.yaml").read_text()
    assert "source: cache" in config and commit in config


def test_what_the_hub_answers_becomes_one_clear_line(tmp_path):
    """A fake Hub on 127.0.0.1 (HF_ENDPOINT) answers HEAD for model_index.json: found, missing repo, gated repo,
    repo without the file. Run in a fresh process so huggingface_hub reads HF_ENDPOINT."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = {"org/ok": (200, {"X-Repo-Commit": "c" * 40, "ETag": '"abc"', "Content-Length": "2"}),
               "org/missing": (404, {"X-Error-Code": "RepoNotFound"}),
               "org/gated": (403, {"X-Error-Code": "GatedRepo"}),
               "org/not-a-pipeline": (404, {"X-Error-Code": "EntryNotFound"})}

    class Hub(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802
            repo = "/".join(self.path.strip("/").split("/")[:2])
            status, headers = answers.get(repo, (500, {}))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    code = (
        "import json, sys\n"
        "from aimfair_cli.core.hub import locate_model\n"
        "out = {}\n"
        "for repo in sys.argv[1:]:\n"
        "    try:\n"
        "        s = locate_model(repo, marker='model_index.json', what='diffusers pipeline')\n"
        "        out[repo] = [s.where, s.local_files_only, s.revision]\n"
        "    except Exception as exc:\n"
        "        out[repo] = type(exc).__name__ + ': ' + str(exc)\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{httpd.server_address[1]}", HF_HOME=str(tmp_path / "hf"))
    try:
        proc = subprocess.run([sys.executable, "-c", code, *answers], env=env, capture_output=True, text=True,
                              timeout=120)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "org/ok": ["hub", False, "c" * 40],
        "org/missing": "GeneratorError: model 'org/missing' was not found on the Hugging Face Hub "
                       "(private repos need `hf auth login` or HF_TOKEN)",
        "org/gated": "GeneratorError: model 'org/gated' is gated on the Hugging Face Hub: accept its licence on the "
                     "model page and log in (`hf auth login`)",
        "org/not-a-pipeline": "GeneratorError: model 'org/not-a-pipeline' on the Hugging Face Hub has no "
                              "model_index.json: it is not a diffusers pipeline",
    }
