"""Helpers shared by the test_safety_* modules: a tiny run folder, checkpoints built in code, and the checks every
refusal test makes (exit status, the one stderr line, inputs byte-identical, nothing left behind)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from aimfair_cli.cli.app import app

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})  # tracebacks off, whatever the shell says
FIELDS = ["file_name", "target", "protected"]
CPU = ["--workers", "0", "--device", "cpu"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result, code: int = 1) -> str:
    """The one `Error: ...` line on stderr (a progress bar may have been drawn above it), without the prefix."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.count("Error: ") == 1, result.stderr
    last = result.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("Error: ")
    return last[len("Error: "):]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under `root`: relative path -> sha256 of its bytes (links: their target). Equal
    snapshots before and after a command mean its inputs are untouched and it left no output behind."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def refused(ws: Path, args, message: str, code: int = 1) -> None:
    """The command ends with exactly `message` as its one error line, and the run folder is byte-identical after:
    inputs untouched, no output (nor temporary file) left behind."""
    before = snapshot(ws)
    assert error_line(run(*args), code) == message
    assert snapshot(ws) == before


def private_copy(base: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the module's prepared run folder, made the working directory (for the `ws` fixtures)."""
    root = tmp_path / "run"
    shutil.copytree(base, root)
    monkeypatch.chdir(root)
    return root


def write_csv(path: Path, rows, fields=FIELDS) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def make_data(root: Path, n: int = 16) -> Path:
    """n 32-px PNGs in root/data/img; train (no protected), val and test manifests; 2 images per test cell."""
    rng = np.random.default_rng(0)
    data = root / "data"
    (data / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        y, s = i % 2, (i // 2) % 2
        base = np.array([190, 50, 50] if y else [50, 50, 190], float) + 40 * s
        Image.fromarray(np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)).save(
            data / "img" / f"{i}.png")
        rows.append({"file_name": f"img/{i}.png", "target": y, "protected": s})
    write_csv(data / "train.csv", [{**r, "protected": ""} for r in rows[: n // 2]])
    write_csv(data / "val.csv", rows[n // 2:])
    write_csv(data / "test.csv", rows[n // 2:])
    synth_rows = [{**r, "group": f"g{r['target']}{r['protected']}"} for r in rows]
    write_csv(data / "synth.csv", synth_rows, FIELDS + ["group"])
    return data


def make_model(seed: int = 0):
    import torch

    from aimfair_cli.training.models import build_model

    torch.manual_seed(seed)
    return build_model(weights="none")


def make_checkpoint(path: Path, model=None, **meta) -> Path:
    from aimfair_cli.training.checkpoint import save_checkpoint

    return save_checkpoint(path, model if model is not None else make_model(), {"image_size": 32, **meta})


def raw_checkpoint(path: Path, meta: dict | None, state: dict | None = None) -> Path:
    """A safetensors file with exactly this aimfair metadata (no defaults filled in) and these tensors."""
    from safetensors.torch import save_file

    from aimfair_cli.training.checkpoint import state_tensors

    state = state if state is not None else state_tensors(make_model())
    save_file(state, str(path), metadata=None if meta is None else {"aimfair": json.dumps(meta)})
    return path


def make_mask(path: Path, model=None, meta: dict | None = None) -> Path:
    from aimfair_cli.masking.maskfile import Mask, save_mask

    model = model if model is not None else make_model()
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    return save_mask(path, Mask(selected=[n for n in shapes if n.startswith("fc.")], shapes=shapes,
                                meta=meta or {"k": 2}))
