"""`aimfair pretrain` and `aimfair eval` as users run them, on a few dozen generated 32-pixel images."""

import csv
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core.manifest import MSG_BAD_LABEL, MSG_EMPTY_VALUE, MSG_MISSING_COLUMN
from aimfair_cli.stages.evaluate import MSG_EMPTY_CELL, MSG_NO_MATCH, MSG_PREDICTIONS_MANY, MSG_REFERENCE_COUNT
from aimfair_cli.stages.pretrain import MSG_BAD_OUT, PretrainConfig, run_pretrain
from aimfair_cli.training.checkpoint import MSG_NOT_SAFETENSORS, read_meta
from aimfair_cli.training.images import MSG_IMAGE_NOT_FOUND, MSG_IMAGE_UNREADABLE

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})  # tracebacks off, whatever the shell says
FIELDS = ["file_name", "target", "protected"]
# Tests pass --weights none: the default, imagenet, needs torchvision's file, which is not here.
TINY = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--weights", "none"]


def _write_csv(path, rows, fields=FIELDS):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def make_dataset(root, n=48, seed=0):
    """n PNGs, 32 px: the target sets the hue (red = 1, blue = 0), the protected value the brightness.
    train = first half (protected left empty: pretraining uses no group labels), val and test from the rest."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        y, s = i % 2, (i // 2) % 2
        base = np.array([190, 50, 50] if y else [50, 50, 190], float) + 40 * s
        Image.fromarray(np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)).save(
            root / "img" / f"{i}.png")
        rows.append({"file_name": f"img/{i}.png", "target": y, "protected": s})
    half = n // 2
    _write_csv(root / "train.csv", [{**r, "protected": ""} for r in rows[:half]])
    _write_csv(root / "val.csv", rows[half:half + 8])
    _write_csv(root / "test.csv", rows[half:])
    return rows


def _run(args, **kw):
    return runner.invoke(app, [str(a) for a in args], **kw)


def _error(result):
    """The one error line (stderr's last line; a progress bar may have been drawn above it)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.count("Error: ") == 1
    return result.stderr.splitlines()[-1] + "\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 1-epoch pretrain through the CLI, shared by the eval tests."""
    root = tmp_path_factory.mktemp("run")
    make_dataset(root / "data")
    (root / "data" / "data_celeba.config.yaml").write_text("data_celeba:\n  target: Smiling\n  protected: Male\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # no stray ./aimfair.yaml
        result = _run(["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--out", "model.safetensors",
                       "--seed", "3", *TINY])
    assert result.exit_code == 0, result.output
    return root, result


@pytest.fixture
def in_run(trained, monkeypatch):
    monkeypatch.chdir(trained[0])
    return trained[0]


def test_pretrain_writes_checkpoint_and_config(trained):
    root, result = trained
    assert result.stdout.startswith("best epoch 1 of 1 (val accuracy ")
    assert result.stdout.rstrip().endswith("-> model.safetensors")
    assert "pretrain epoch 1/1" in result.stderr  # the progress bar is on stderr
    meta = read_meta(root / "model.safetensors")
    assert (meta["stage"], meta["image_size"], meta["target"], meta["protected"]) == ("pretrain", 32, "Smiling", "Male")
    assert meta["config"]["epochs"] == 1 and meta["config"]["milestones"] == [10] and meta["config"]["seed"] == 3
    assert meta["best_epoch"] == 1 and len(meta["history"]) == 1
    assert "pretrain:" in (root / "model.config.yaml").read_text()
    assert not list(root.glob(".*.tmp"))


@pytest.mark.slow
def test_same_seed_same_weights(trained, tmp_path):
    root, _ = trained
    d = root / "data"
    cfg = PretrainConfig(train=d / "train.csv", val=d / "val.csv", out=tmp_path / "again.safetensors", epochs=1,
                         image_size=32, batch_size=8, workers=0, seed=3, device="cpu", weights="none")
    run_pretrain(cfg)
    a, b = load_file(str(root / "model.safetensors")), load_file(str(tmp_path / "again.safetensors"))
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_json(in_run):
    result = _run(["eval", "--model", "model.safetensors", "--data", "data/test.csv", "--json", "--workers", "0"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == ["acc", "wst", "eo", "eo_worst", "std", "positive_rate", "degenerate", "cells"]
    assert sorted(out["cells"]) == ["0,0", "0,1", "1,0", "1,1"]
    assert all(c["n"] == 6 for c in out["cells"].values())
    assert all(0 <= out[k] <= 1 for k in ("acc", "wst", "eo", "eo_worst", "std"))
    assert out["wst"] == min(c["acc"] for c in out["cells"].values())


def test_eval_table_and_predictions(in_run):
    result = _run(["eval", "-m", "model.safetensors", "--data", "data/test.csv", "--predictions", "preds.csv",
                   "--workers", "0"])
    assert result.exit_code == 0, result.output
    for text in ("y=0 s=1", "n=6", "ACC", "WST", "EO worst", "STD", "model.safetensors"):
        assert text in result.stdout
    with open(in_run / "preds.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file_name", "target", "protected", "score", "pred"]
    assert [r["file_name"] for r in rows] == [f"img/{i}.png" for i in range(24, 48)]
    assert all(r["pred"] == str(int(float(r["score"]) > 0.5)) for r in rows)
    assert [r["target"] for r in rows] == [str(i % 2) for i in range(24, 48)]


@pytest.mark.slow
def test_eval_several_checkpoints_by_glob(in_run):
    (in_run / "seeds").mkdir(exist_ok=True)
    for i in range(2):
        shutil.copy(in_run / "model.safetensors", in_run / "seeds" / f"s{i}.safetensors")
    result = _run(["eval", "-m", "seeds/*.safetensors", "--data", "data/test.csv", "--json", "--workers", "0"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["model"] for r in out["runs"]] == ["seeds/s0.safetensors", "seeds/s1.safetensors"]
    agg = out["aggregate"]
    assert agg["n_runs"] == 2 and agg["acc"]["std"] == 0.0
    assert agg["wst_of_mean_cells"] == pytest.approx(out["runs"][0]["wst"])
    assert agg["wst_mean_of_runs"]["mean"] == pytest.approx(out["runs"][0]["wst"])
    assert agg["std_of_mean_cells"] == pytest.approx(out["runs"][0]["std"])  # identical runs: both STD forms agree
    table = _run(["eval", "-m", "seeds/*.safetensors", "--data", "data/test.csv", "--workers", "0"])
    assert table.exit_code == 0, table.output
    assert "mean ± std (2 runs)" in table.stdout and "WST: min of mean cells" in table.stdout
    assert "STD: std of mean cells" in table.stdout
    assert "sample standard deviation" in table.stdout


def _variant(src, dst, shift):
    """A copy of checkpoint `src` whose fc bias is moved by `shift`: another model with other predictions."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    tensors["fc.bias"] = tensors["fc.bias"] + shift
    dst.parent.mkdir(exist_ok=True)
    save_file(tensors, str(dst), metadata=meta)


@pytest.fixture
def strategies(in_run):
    """Three 'seeds' of a strategy a/ and of a reference b/, written out of order so the glob has to sort them."""
    for name, shift in (("s2", -0.4), ("s0", 0.0), ("s1", 0.3)):
        _variant(in_run / "model.safetensors", in_run / "a" / f"{name}.safetensors", shift)
    for name, shift in (("s1", -1.0), ("s2", 0.8), ("s0", 1.5)):
        _variant(in_run / "model.safetensors", in_run / "b" / f"{name}.safetensors", shift)
    return in_run


@pytest.mark.slow
def test_eval_reference_globs_paired_by_hand(strategies):
    result = _run(["eval", "-m", "a/*.safetensors", "--reference", "b/*.safetensors", "--data", "data/test.csv",
                   "--json", "--workers", "0"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == ["runs", "aggregate", "reference", "paired"]
    assert [r["model"] for r in out["runs"]] == [f"a/s{i}.safetensors" for i in range(3)]
    assert [r["model"] for r in out["reference"]["runs"]] == [f"b/s{i}.safetensors" for i in range(3)]
    assert out["reference"]["aggregate"]["n_runs"] == 3
    assert list(out["paired"]) == ["acc", "wst", "eo", "std"]
    t = 4.302653  # Student t, 97.5 % quantile, 2 degrees of freedom
    for key, higher_is_better in (("acc", True), ("wst", True), ("eo", False), ("std", False)):
        diffs = [a[key] - b[key] for a, b in zip(out["runs"], out["reference"]["runs"])]
        mean = sum(diffs) / 3
        half = t * math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
        entry = out["paired"][key]
        assert entry["n"] == 3
        assert entry["mean_diff"] == pytest.approx(mean)
        assert entry["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-6)  # t to 6 decimals
        assert entry["wins"] == sum((d > 0) if higher_is_better else (d < 0) for d in diffs)
    assert any(e["mean_diff"] != 0 for e in out["paired"].values())  # the variants do differ

    # repeated flags keep their order: reversing the references pairs a/s0 with b/s2
    result = _run(["eval", *sum((["-m", f"a/s{i}.safetensors"] for i in range(3)), []),
                   *sum((["--reference", f"b/s{i}.safetensors"] for i in (2, 1, 0)), []),
                   "--data", "data/test.csv", "--json", "--workers", "0"])
    assert result.exit_code == 0, result.output
    rev = json.loads(result.stdout)
    assert [r["model"] for r in rev["reference"]["runs"]] == [f"b/s{i}.safetensors" for i in (2, 1, 0)]
    assert rev["paired"]["acc"]["mean_diff"] == pytest.approx(out["paired"]["acc"]["mean_diff"])  # same mean

    table = _run(["eval", "-m", "a/*.safetensors", "-r", "b/*.safetensors", "--data", "data/test.csv",
                  "--workers", "0"])
    assert table.exit_code == 0, table.output
    for text in ("paired: model − reference over 3 run(s)", "STD: std of mean cells", "reference: data/test.csv",
                 "wins: runs where the model beat the reference (higher ACC/WST, lower EO/STD"):
        assert text in table.stdout
    lo, hi = out["paired"]["eo"]["ci95"]
    assert f"[{100 * lo:+.2f}, {100 * hi:+.2f}]" in table.stdout


def test_eval_reference_one_run_has_no_interval(strategies):
    args = ["eval", "-m", "a/s1.safetensors", "-r", "b/s1.safetensors", "--data", "data/test.csv", "--workers", "0"]
    result = _run([*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("acc", "wst", "eo", "std"):
        assert out["paired"][key]["ci95"] is None and out["paired"][key]["n"] == 1
        diff = out["runs"][0][key] - out["reference"]["runs"][0][key]
        assert out["paired"][key]["mean_diff"] == pytest.approx(diff)
    table = _run(args)
    assert table.exit_code == 0, table.output
    rows = [line for line in table.stdout.splitlines() if line.startswith(("│ ACC ", "│ WST ", "│ EO ", "│ STD "))]
    assert len(rows) == 4 and all("—" in row for row in rows)
    assert "[" not in "".join(rows)  # no zero-width interval


def test_eval_reference_count_must_match(strategies):
    result = _run(["eval", "-m", "a/*.safetensors", "--reference", "b/s0.safetensors", "--data", "data/test.csv"])
    assert _error(result) == "Error: " + MSG_REFERENCE_COUNT.format(n=3, m=1) + "\n"
    result = _run(["eval", "-m", "a/s0.safetensors", "-r", "nothing/*.safetensors", "--data", "data/test.csv"])
    assert _error(result) == "Error: " + MSG_NO_MATCH.format(pattern="nothing/*.safetensors") + "\n"


def test_eval_errors(in_run):
    result = _run(["eval", "-m", "nothing/*.safetensors", "--data", "data/test.csv"])
    assert _error(result) == "Error: " + MSG_NO_MATCH.format(pattern="nothing/*.safetensors") + "\n"

    result = _run(["eval", "-m", "model.safetensors", "-m", "model.safetensors", "--data", "data/test.csv",
                   "--workers", "0"])
    assert result.exit_code == 0 and "mean ±" not in result.stdout  # the same file twice counts once

    shutil.copy(in_run / "model.safetensors", in_run / "copy.safetensors")
    result = _run(["eval", "-m", "model.safetensors", "-m", "copy.safetensors", "--data", "data/test.csv",
                   "--predictions", "p2.csv"])
    assert _error(result) == "Error: " + MSG_PREDICTIONS_MANY.format(n=2) + "\n"
    assert not (in_run / "p2.csv").exists()


def test_eval_refuses_a_pickle(in_run):
    marker = in_run / "unpickled"
    torch.save({"conv1.weight": torch.zeros(1)}, in_run / "model.pt")
    result = _run(["eval", "-m", "model.pt", "--data", "data/test.csv", "--predictions", "p.csv"])
    assert _error(result) == f"Error: {MSG_NOT_SAFETENSORS.format(path='model.pt')}\n"
    assert not marker.exists() and not (in_run / "p.csv").exists()


def test_eval_needs_protected_everywhere(in_run):
    rows = list(csv.DictReader(open(in_run / "data" / "test.csv", newline="")))
    _write_csv(in_run / "noprot.csv", rows, fields=["file_name", "target"])
    result = _run(["eval", "-m", "model.safetensors", "--data", "noprot.csv"])
    assert _error(result) == "Error: " + MSG_MISSING_COLUMN.format(path="noprot.csv", column="protected") + "\n"

    _write_csv(in_run / "gap.csv", [rows[0], {**rows[1], "protected": ""}, *rows[2:]])
    result = _run(["eval", "-m", "model.safetensors", "--data", "gap.csv"])
    assert _error(result) == "Error: " + MSG_EMPTY_VALUE.format(path="gap.csv", row=2, column="protected") + "\n"

    _write_csv(in_run / "cell.csv", [r for r in rows if (r["target"], r["protected"]) != ("1", "0")])
    result = _run(["eval", "-m", "model.safetensors", "--data", "cell.csv"])
    assert _error(result) == "Error: " + MSG_EMPTY_CELL.format(path="cell.csv", y=1, s=0) + "\n"


def test_debug_shows_the_traceback(in_run):
    result = _run(["eval", "-m", "model.pt", "--data", "data/test.csv"], env={"AIMFAIR_DEBUG": "1"})
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "CheckpointError"


@pytest.fixture
def bad_run(tmp_path, monkeypatch):
    make_dataset(tmp_path / "data", n=16)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _pretrain(*extra):
    return _run(["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--out", "out.safetensors", *TINY,
                 *extra])


def test_pretrain_missing_column(bad_run):
    _write_csv(bad_run / "data" / "train.csv", [{"file_name": "img/0.png"}], fields=["file_name"])
    assert _error(_pretrain()) == "Error: " + MSG_MISSING_COLUMN.format(path="data/train.csv", column="target") + "\n"
    assert not list(bad_run.glob("out*"))


def test_pretrain_label_not_binary(bad_run):
    _write_csv(bad_run / "data" / "val.csv", [{"file_name": "img/0.png", "target": 0, "protected": 0},
                                              {"file_name": "img/1.png", "target": 2, "protected": 0}])
    expected = MSG_BAD_LABEL.format(path="data/val.csv", row=2, column="target", value="2")
    assert _error(_pretrain()) == f"Error: {expected}\n"
    assert not list(bad_run.glob("out*"))


def test_pretrain_image_missing_or_corrupt(bad_run):
    (bad_run / "data" / "img" / "3.png").unlink()
    expected = MSG_IMAGE_NOT_FOUND.format(manifest="data/train.csv", row=4, path="data/img/3.png")
    assert _error(_pretrain()) == f"Error: {expected}\n"
    (bad_run / "data" / "img" / "3.png").write_bytes(b"not a png")
    expected = MSG_IMAGE_UNREADABLE.format(manifest="data/train.csv", row=4, path="data/img/3.png")
    assert _error(_pretrain()) == f"Error: {expected}\n"
    assert not list(bad_run.glob("out*"))


def test_pretrain_bad_options(bad_run):
    # a flag's value that is not of its type is a usage error, exit 2 (docs/exit-codes.md)
    ten = _pretrain("--milestones", "ten")
    assert ten.exit_code == 2 and ten.stderr == "Error: --milestones: expected a whole number, got 'ten'\n"
    result = _run(["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--out", "out.pt", *TINY])
    assert _error(result) == "Error: " + MSG_BAD_OUT.format(out="out.pt") + "\n"
    assert _error(_pretrain("--device", "tpu")) == "Error: unknown device 'tpu' (use auto, cpu, cuda or cuda:N)\n"
    assert not list(bad_run.glob("out*"))


def test_pretrain_options_from_the_run_folder_config(bad_run):
    (bad_run / "aimfair.yaml").write_text("pretrain:\n  milestones: 'x'\n")
    assert _error(_pretrain()) == "Error: aimfair.yaml: pretrain.milestones: expected a whole number, got 'x'\n"
    (bad_run / "aimfair.yaml").write_text("pretrain:\n  epoch: 3\n")
    assert "unknown key 'epoch' in section 'pretrain'" in _error(_pretrain())


def test_pretrain_defaults_to_imagenet_and_offline_fails_at_once(tmp_path, monkeypatch):
    """Default --weights imagenet, as the paper: with no file in the torch cache and no network, one line
    saying where to put the file, before any data is read (the manifests here do not even exist)."""
    from aimfair_cli.training import models

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = "http://127.0.0.1:9/resnet18-f37072fd.pth"  # connection refused at once; nothing leaves the machine
    monkeypatch.setitem(models.IMAGENET_URLS, "resnet18", url)
    result = _run(["pretrain", "--train", "missing/train.csv", "--val", "missing/val.csv", "--out", "o.safetensors"])
    line = _error(result)
    dest = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert line.startswith("Error: ImageNet weights for resnet18 are not in the torch cache and could not be downloaded (")
    assert line.endswith(f"download {url} and put it at {dest} (or pass --weights none for random initialisation)\n")


def test_pretrain_help_shows_the_defaults():
    result = _run(["pretrain", "--help"], terminal_width=400)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "resnet18-f37072fd.pth" in text and "[default: imagenet]" in text


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from aimfair_cli.cli.app import app\n"
        "for args in (['--help'], ['pretrain', '--help'], ['eval', '--help']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (args, e.code)\n"
        "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'PIL') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("heavy: []")


def _commands():
    import typer

    root = typer.main.get_command(app)
    out = []
    for name, cmd in root.commands.items():
        out.append([name])
        out += [[name, sub] for sub in getattr(cmd, "commands", {})]
    return out


@pytest.mark.parametrize("path", _commands(), ids=" ".join)
def test_every_command_has_help(path):
    result = _run([*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("backend", ["pillow", "matplotlib"])
def test_eval_plot_draws_cells_and_score_histograms(in_run, tmp_path, monkeypatch, backend):
    from PIL import Image

    from aimfair_cli.fairness import plots

    if backend == "matplotlib":
        pytest.importorskip("matplotlib")
    else:
        monkeypatch.setattr(plots, "matplotlib_available", lambda: False)
    out = tmp_path / "eval.png"
    result = _run(["eval", "--model", "model.safetensors", "--data", "data/test.csv", "--plot", out, "--device", "cpu",
                   "--workers", "0"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.width > 300 and im.height > 500  # bars above histograms
        assert sum(1 for c in im.convert("L").histogram() if c) > 10
    bad = _run(["eval", "--model", "model.safetensors", "--data", "data/test.csv", "--plot", tmp_path / "e.jpg"])
    assert bad.exit_code == 1 and "--plot" in bad.stderr
