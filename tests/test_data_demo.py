"""`aimfair data demo`: exact quotas, valid manifests, identical files for a seed, all-or-nothing output."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core.manifest import read_manifest
from aimfair_cli.data import demo as demo_mod
from aimfair_cli.data.demo import (
    MSG_BUSY,
    MSG_FOREIGN_IMAGES,
    TMP_PREFIX,
    make_demo_dataset,
    mixed_quotas,
)
from aimfair_cli.fairness.cells import CELLS

runner = CliRunner()
TINY = ["--n-train", "40", "--n-val", "12", "--n-test", "20", "--size", "32"]


def run(*args: str):
    return runner.invoke(app, ["data", "demo", *args])


def files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    result = run("--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    return out


def test_writes_valid_manifests_with_exact_quotas(tiny):
    want = {"train": {(0, 0): 2, (0, 1): 18, (1, 0): 18, (1, 1): 2}, "val": mixed_quotas(12), "test": mixed_quotas(20)}
    for split, cells in want.items():
        m = read_manifest(tiny / f"{split}.csv", require_protected=True)
        got = {c: sum(1 for r in m.rows if (r["target"], r["protected"]) == c) for c in CELLS}
        assert got == cells, split
        assert {r["split"] for r in m.rows} == {split}
        for r in m.rows:
            assert not r["file_name"].startswith("/")  # relative to the manifest's folder
            assert m.image_path(r).is_file()
    assert (tiny / "data_demo.config.yaml").is_file()
    assert not [p for p in tiny.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_images_have_the_requested_size(tiny):
    from PIL import Image

    m = read_manifest(tiny / "test.csv")
    with Image.open(m.image_path(m.rows[0])) as img:
        assert img.size == (32, 32) and img.mode == "RGB"


def test_val_and_test_follow_the_celeba_mix():
    q = mixed_quotas(1000)
    assert q == {(0, 0): 270, (0, 1): 230, (1, 0): 350, (1, 1): 150}
    assert sum(mixed_quotas(7).values()) == 7


def test_same_seed_gives_identical_files_and_another_seed_does_not(tiny, tmp_path):
    again = tmp_path / "again"
    assert run("--out", str(again), *TINY).exit_code == 0
    assert files(again) == files(tiny)
    other = tmp_path / "other"
    assert run("--out", str(other), *TINY, "--seed", "1").exit_code == 0
    a, b = files(other), files(tiny)
    assert a.keys() == b.keys()
    assert a["images/train/000000.png"] != b["images/train/000000.png"]


def test_rerun_replaces_its_own_output(tmp_path):
    out = tmp_path / "data"
    make_demo_dataset(out=out, n_train=8, n_val=4, n_test=4, size=16, seed=0)
    make_demo_dataset(out=out, n_train=12, n_val=4, n_test=4, size=16, seed=0)
    assert len(read_manifest(out / "train.csv")) == 12
    assert len(list((out / "images" / "train").iterdir())) == 12  # no leftovers from the first run
    assert sorted(p.name for p in out.iterdir()) == ["data_demo.config.yaml", "images", "test.csv", "train.csv", "val.csv"]


def test_an_interrupted_run_leaves_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "data"
    make_demo_dataset(out=out, n_train=8, n_val=4, n_test=4, size=16, seed=0)
    before = files(out)
    real = demo_mod.render_demo_image
    calls = {"n": 0}

    def flaky(**kw):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(**kw)

    monkeypatch.setattr(demo_mod, "render_demo_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(out=out, n_train=8, n_val=4, n_test=4, size=16, seed=3)
    assert files(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["data_demo.config.yaml", "images", "test.csv", "train.csv", "val.csv"]


def test_an_interrupted_first_run_leaves_nothing(tmp_path, monkeypatch):
    def boom(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_mod, "render_demo_image", boom)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(out=tmp_path / "data", n_train=8, n_val=4, n_test=4, size=16)
    assert not (tmp_path / "data").exists()


def _start(out, *args: str):
    import os
    import subprocess
    import sys

    aimfair = os.path.join(os.path.dirname(sys.executable), "aimfair")
    return subprocess.Popen([aimfair, "data", "demo", "--out", str(out), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for_images(out, at_least: int, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while sum(1 for _ in out.glob(f"{TMP_PREFIX}*/images/*/*.png")) < at_least:
        assert time.monotonic() < deadline, "the import never started rendering"
        time.sleep(0.05)


def test_a_killed_import_leaves_no_manifest_and_the_next_run_clears_its_staging(tmp_path):
    """A real SIGKILL mid-render: no manifest (nothing looks imported), and the next run removes the staging
    folder the killed one could not clean, then writes exactly the dataset."""
    import signal

    out = tmp_path / "data"
    proc = _start(out, "--n-train", "4000", "--size", "32")
    _wait_for_images(out, 50)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(out.rglob("*.csv"))
    assert list(out.glob(f"{TMP_PREFIX}*"))  # what the kill left behind
    result = run("--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["data_demo.config.yaml", "images", "test.csv", "train.csv",
                                                      "val.csv"]


def test_a_second_import_into_a_busy_folder_is_refused(tmp_path):
    """Two real processes on one --out: the second refuses in one line and the first finishes untouched."""
    out = tmp_path / "data"
    first = _start(out, "--n-train", "600", "--size", "32")
    _wait_for_images(out, 20)
    second = _start(out, *TINY)
    assert second.wait(timeout=120) == 1
    assert second.stderr.read().strip().splitlines()[-1] == f"Error: {MSG_BUSY.format(out=out)}"
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert sorted(p.name for p in out.iterdir()) == ["data_demo.config.yaml", "images", "test.csv", "train.csv",
                                                      "val.csv"]
    assert len(read_manifest(out / "train.csv")) == 600


def test_refuses_to_replace_an_images_folder_it_did_not_write(tmp_path):
    (tmp_path / "images").mkdir()
    result = run("--out", str(tmp_path), *TINY)
    assert result.exit_code == 1
    assert result.output.endswith(f"Error: {MSG_FOREIGN_IMAGES.format(path=tmp_path / 'images')}\n")


@pytest.mark.parametrize("args, message", [
    (["--bias", "3:1"], "cannot parse bias '3:1' (use minority:majority like 1:9 or 1/9, or the minority share like 0.1)"),
    (["--size", "8"], "--size: must be at least 16, got 8"),
    (["--n-train", "2"], "--n-train: must be at least 4, got 2"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    result = run("--out", str(tmp_path / "d"), *args)
    assert result.exit_code == 1
    assert result.output.endswith(f"Error: {message}\n")
    assert not (tmp_path / "d").exists()


def test_json_output_and_config_file_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aimfair.yaml").write_text("data_demo: {n_train: 20, n_val: 4, n_test: 4, size: 16}\n")
    result = run("--json", "--n-train", "12")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["splits"]["train"]["n"] == 12  # the flag beats the config file
    assert report["splits"]["val"]["n"] == 4
    assert (tmp_path / "data" / "train.csv").is_file()  # the run folder's conventional data/ folder


def test_the_ambiguous_share_of_faces_hides_the_label():
    """--ambiguous 1: every face's pixels are the same whichever label it carries; 0: none; the default: about
    10 % of the faces."""
    import numpy as np

    def same_both_ways(index: int, ambiguous: float) -> bool:
        a, b = (np.asarray(demo_mod.render_demo_image(seed=0, split="train", index=index, target=t, protected=1,
                                                      size=24, ambiguous=ambiguous)[0]) for t in (0, 1))
        return np.array_equal(a, b)

    assert all(same_both_ways(i, 1.0) for i in range(5))
    assert not any(same_both_ways(i, 0.0) for i in range(5))
    share = np.mean([same_both_ways(i, demo_mod.DemoDataConfig.ambiguous) for i in range(300)])
    assert 0.06 < share < 0.15


def test_expression_kind_names_what_the_renderer_drew(monkeypatch):
    """demo_expression_kind replays the draws render_demo_image makes: for every face, the kind it names matches
    the expression and mouth the renderer was actually given, and every kind turns up."""
    import aimfair_cli.render.face as face

    drawn = []
    real_draw = face.draw_params

    def recording(attrs, rng, *, expression="natural"):
        params = real_draw(attrs, rng, expression=expression)
        drawn.append((expression, params.mouth_open > 0))
        return params

    monkeypatch.setattr(face, "draw_params", recording)
    seen = set()
    for i in range(120):
        target, protected = i % 2, (i // 2) % 2
        drawn.clear()
        demo_mod.render_demo_image(seed=3, split="test", index=i, target=target, protected=protected, size=16)
        (expression, mouth_open), = drawn
        kind = demo_mod.demo_expression_kind(seed=3, split="test", index=i, target=target, protected=protected)
        expected = ("ambiguous" if expression == "subtle" else
                    ("smile, open" if mouth_open else "smile, closed lips") if target else
                    ("talking" if mouth_open else "neutral"))
        assert kind == expected, i
        seen.add(kind)
    assert seen == set(demo_mod.EXPRESSION_KINDS)


def test_ambiguous_is_an_option_and_recorded(tmp_path):
    out = tmp_path / "data"
    result = run("--out", str(out), *TINY, "--ambiguous", "0.5")
    assert result.exit_code == 0, result.output
    assert "ambiguous: 0.5" in (out / "data_demo.config.yaml").read_text()
    bad = run("--out", str(tmp_path / "bad"), *TINY, "--ambiguous", "1.5")
    assert bad.exit_code != 0 and not (tmp_path / "bad").exists()
