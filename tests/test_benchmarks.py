"""The throughput benchmarks run (on tiny settings) and print what they promise; no speed is asserted here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_json(script: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_training_throughput_states_each_phase_against_the_raw_loop():
    r = run_json("throughput.py", "--device", "cpu", "--image-size", "32", "--batch-size", "16", "--images", "64",
                 "--rounds", "1", "--files", "--workers", "0")
    assert {"device", "image_size", "batch_size", "raw", "train", "train_ratio", "mask", "mask_ratio"} <= set(r)
    assert (r["image_size"], r["batch_size"], r["images"]) == (32, 16, 64)
    assert r["device"].startswith("cpu") and r["amp"] is False and r["channels_last"] is False
    for key in ("raw", "train", "mask", "files"):
        assert r[key] > 0
    assert r["train_ratio"] == pytest.approx(r["train"] / r["raw"], rel=0.03)  # from the unrounded rates
    assert r["mask_ratio"] == pytest.approx(r["mask"] / r["raw"], rel=0.03)


@pytest.mark.slow
def test_synth_throughput_on_the_tiny_pipeline():
    pytest.importorskip("diffusers")
    r = run_json("synth_throughput.py", "--tiny", "--device", "cpu", "--batches", "2,4", "--official-batch", "3")
    assert r["arch"] == "tiny" and r["side"] == 32
    official, default = r["rows"][:2]
    assert (official["scheduler"], official["steps"], official["batch"]) == ("ddim", 50, 3)
    assert (default["scheduler"], default["steps"]) == ("dpm++", 25) and default["batch"] in (2, 4)
    assert official["ratio"] == 1.0 and r["default_ratio"] == default["ratio"]
    assert default["ratio"] == pytest.approx(default["img_s"] / official["img_s"], rel=0.02)
    assert default["hours_40k"] == pytest.approx(40000 / default["img_s"] / 3600, rel=0.02)
    assert len(r["rows"]) == 2  # no compile row on a CPU unless asked


def test_prompt_length_benchmark_reports_each_length_against_the_shortest():
    pytest.importorskip("diffusers")
    from aimfair_cli.core.tasks import MAX_PROMPT_CHARS

    r = run_json("prompt_length.py", "--lengths", f"2000,40,{MAX_PROMPT_CHARS}", "--repeats", "1")
    assert r["bound"] == MAX_PROMPT_CHARS
    assert [row["chars"] for row in r["rows"]] == [40, MAX_PROMPT_CHARS, 2000]
    assert [row["within_bound"] for row in r["rows"]] == [True, True, False]
    assert r["rows"][0]["ratio"] == 1.0
    assert all(row["ratio"] == pytest.approx(row["seconds_per_image"] / r["rows"][0]["seconds_per_image"])
               for row in r["rows"])


def test_synth_throughput_refuses_the_full_architecture_on_a_cpu():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/synth_throughput.py"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "hours on a CPU" in proc.stderr


@pytest.mark.slow
def test_demo_properties_prints_the_regime_rows_beside_the_papers(tmp_path):
    # --work may be a finished `aimfair demo` folder (run with the demo's default device): its runs are reused and
    # its report and commands stay the study's
    sizes = ("--quick", "--n-train", "160", "--size", "16", "--seeds", "1")
    demo = subprocess.run([sys.executable, "-m", "aimfair_cli", "demo", *sizes, "--n-val", "160", "--n-test", "160", "--study",
                           "strategies", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert demo.returncode == 0, demo.stderr[-2000:]
    kept = {name: (tmp_path / name).read_bytes() for name in ("report.md", "commands.sh", "demo.config.yaml")}
    trained = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")}
    assert len(trained) >= 4
    # the quick preset is plumbing: its numbers are not asserted, only that the exit status follows the checks
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_properties.py"), "--regime", *sizes,
                           "--n-val", "160", "--n-test", "160", "--work", str(tmp_path), "--errors", "--json"], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(r["rows"]) == ["pretrained", "synthetic", "supplement", "repair", "full"]
    assert r["rows"]["pretrained"]["paper"] == {"acc": 89.23, "wst": 71.52, "eo": 23.84, "std": 10.65}
    for row in r["rows"].values():
        assert 0 <= row["ours"]["acc"] <= 100 and len(row["seeds"]) == 1
    assert {c["where"] for c in r["checks"]} == {"mean", "seed 0"}
    erm = r["rows"]["pretrained"]["seeds"][0]
    gap = next(c for c in r["checks"] if c["target"] == "ACC − WST ≥ 12" and c["where"] == "seed 0")
    assert gap["holds"] == (erm["acc"] - erm["wst"] >= 12)
    failed = [c for c in r["checks"] if not c["holds"]]
    assert len(r["failures"]) == len(failed) and proc.returncode == (1 if failed else 0), proc.stderr[-2000:]
    if failed:
        assert f"regime: {len(failed)} target(s) fail: " in proc.stderr
    assert {name: (tmp_path / name).read_bytes() for name in kept} == kept
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")} == trained  # nothing retrained
    # --errors: each row's test faces sorted by expression kind and gender add back up to the row's accuracy
    from aimfair_cli.data.demo import EXPRESSION_KINDS

    assert list(r["errors"]) == list(r["rows"])
    for row, by_kind in r["errors"].items():
        assert list(by_kind) == list(EXPRESSION_KINDS)
        cells = [c for kind in by_kind.values() for c in kind.values()]
        assert sum(c["n"] for c in cells) == 160
        right = sum(c["n"] * c["acc"] for c in cells if c["n"])
        assert right / 160 == pytest.approx(r["rows"][row]["ours"]["acc"], abs=1e-6), row
