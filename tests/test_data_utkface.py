"""`aimfair data utkface`: a UTKFace-shaped fixture (labels in the file names, a few names that do not parse)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core.errors import UsageError
from aimfair_cli.data.utkface import UtkfaceConfig, import_utkface, parse_name

# 40 images per (Female, White) cell; ages 10..87 so that Young splits every cell.
PER_CELL = 40
BAD_NAMES = (
    "39_1_20170116174525125.jpg.chip.jpg",  # race missing (the real dataset has names like this)
    "25_2_0_20170116174525125.jpg",  # gender 2
    "notaface.jpg",
    "part2/._25_0_0_20170116174525125.jpg",  # a macOS resource fork
)

runner = CliRunner()


def tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (60, 90, 120)).save(buf, "JPEG")
    return buf.getvalue()


def build_utkface(root: Path) -> Path:
    jpeg = tiny_jpeg()
    i = 0
    for female in (0, 1):
        for white in (0, 1):
            for j in range(PER_CELL):
                race = 0 if white else 1 + j % 4
                age = 10 + (i * 7) % 78
                # a mix of the two releases' names, spread over two sub-folders
                suffix = ".jpg.chip.jpg" if i % 2 else ".jpg"
                folder = root / ("part1" if i % 3 else "part2")
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{age}_{female}_{race}_2017011617452{i:04d}{suffix}").write_bytes(jpeg)
                i += 1
    for name in BAD_NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(jpeg)
    (root / "README.txt").write_text("not an image: ignored, not counted")
    return root


@pytest.fixture(scope="module")
def utk(tmp_path_factory) -> Path:
    return build_utkface(tmp_path_factory.mktemp("utk"))


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def cells(path: Path) -> list[int]:
    r = rows(path)
    return [sum(1 for x in r if (int(x["target"]), int(x["protected"])) == c) for c in ((0, 0), (0, 1), (1, 0), (1, 1))]


def run(*args: str):
    return runner.invoke(app, ["data", "utkface", *map(str, args)])


def test_parse_name():
    assert parse_name("25_1_0_20170116174525125.jpg.chip.jpg") == (25, 1, 0)
    assert parse_name("8_0_4_20170109204542318.JPG") == (8, 0, 4)
    assert parse_name("39_1_20170116174525125.jpg.chip.jpg") is None
    assert parse_name("25_1_5_20170116174525125.jpg") is None  # race 0..4
    assert parse_name("25_1_0_20170116174525125.png") is None


def test_quotas_balance_and_disjoint_splits(utk, tmp_path):
    result = run(utk, "--n", "40", "--bias", "1:9", "--test-per-group", "5", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert cells(tmp_path / "train.csv") == [2, 18, 18, 2]
    assert cells(tmp_path / "test.csv") == [5, 5, 5, 5]
    assert cells(tmp_path / "val.csv") == [5, 5, 5, 5]  # 17 left in the fullest-used cell: capped at 5
    names = {s: [r["file_name"] for r in rows(tmp_path / f"{s}.csv")] for s in ("train", "val", "test")}
    assert all(len(set(v)) == len(v) for v in names.values())
    assert not set(names["train"]) & set(names["test"])
    assert not set(names["val"]) & (set(names["train"]) | set(names["test"]))
    assert {r["split"] for r in rows(tmp_path / "val.csv")} == {"val"}


def test_labels_come_from_the_file_names(utk, tmp_path):
    import_utkface(root=utk, out=tmp_path, config=UtkfaceConfig(n=40, test_per_group=5))
    for split in ("train", "val", "test"):
        for r in rows(tmp_path / f"{split}.csv"):
            assert Path(r["file_name"]).is_file()
            age, gender, race = parse_name(Path(r["file_name"]).name)
            assert (int(r["target"]), int(r["protected"])) == (gender, int(race == 0))


def test_young_uses_the_age_threshold(utk, tmp_path):
    import_utkface(root=utk, out=tmp_path, config=UtkfaceConfig(target="Young", protected="Female", young_max_age=30,
                                                                n=20, bias="1:1", test_per_group=3))
    ages = []
    for split in ("train", "val", "test"):
        for r in rows(tmp_path / f"{split}.csv"):
            age, gender, _ = parse_name(Path(r["file_name"]).name)
            assert (int(r["target"]), int(r["protected"])) == (int(age <= 30), gender)
            ages.append(age)
    assert any(30 < a <= 35 for a in ages)  # ages the default threshold (35) would call Young


def test_unparsable_names_are_one_warning(utk, tmp_path):
    result = run(utk, "--n", "40", "--test-per-group", "5", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        "Warning: skipped 4 file(s) whose names do not read as age_gender_race_date.jpg, e.g. "
        "25_2_0_20170116174525125.jpg, 39_1_20170116174525125.jpg.chip.jpg, notaface.jpg, ..."
    ]
    listed = {Path(r["file_name"]).name for s in ("train", "val", "test") for r in rows(tmp_path / f"{s}.csv")}
    assert not listed & {Path(n).name for n in BAD_NAMES}


def test_same_seed_same_split_other_seed_other_split(utk, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        import_utkface(root=utk, out=tmp_path / name, config=UtkfaceConfig(n=40, test_per_group=5, seed=seed))
    read = lambda d, s: (tmp_path / d / f"{s}.csv").read_bytes()  # noqa: E731
    assert all(read("a", s) == read("b", s) for s in ("train", "val", "test"))
    assert read("a", "train") != read("c", "train")


def test_test_set_does_not_depend_on_n_or_bias(utk, tmp_path):
    import_utkface(root=utk, out=tmp_path / "a", config=UtkfaceConfig(n=40, test_per_group=5))
    import_utkface(root=utk, out=tmp_path / "b", config=UtkfaceConfig(n=60, bias="0.25", test_per_group=5))
    assert (tmp_path / "a" / "test.csv").read_bytes() == (tmp_path / "b" / "test.csv").read_bytes()


def test_val_size_defaults_to_what_every_cell_can_spare(utk, tmp_path):
    # n=60 takes 27 of the 30 (White male) images left after a 10-per-cell test set: 3 remain for val
    result = import_utkface(root=utk, out=tmp_path / "auto", config=UtkfaceConfig(n=60, test_per_group=10))
    assert result.counts["val"] == {(0, 0): 3, (0, 1): 3, (1, 0): 3, (1, 1): 3}
    cfg = yaml.safe_load((tmp_path / "auto" / "data_utkface.config.yaml").read_text())["data_utkface"]
    assert cfg["val_per_group"] == 3 and cfg["seed"] == 0 and cfg["young_max_age"] == 35
    cfg = UtkfaceConfig(n=60, test_per_group=10, val_per_group=2)
    result = import_utkface(root=utk, out=tmp_path / "two", config=cfg)
    assert result.counts["val"] == {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2}


def test_json_output(utk, tmp_path):
    result = run(utk, "--n", "40", "--test-per-group", "5", "--val-per-group", "4", "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["splits"]["test"]["cells"] == {"0,0": 5, "0,1": 5, "1,0": 5, "1,1": 5}
    assert obj["splits"]["val"]["n"] == 16 and len(obj["warnings"]) == 1


def test_relative_names_when_out_is_inside_root(tmp_path):
    root = build_utkface(tmp_path / "utk")
    import_utkface(root=root, out=root / "manifests", config=UtkfaceConfig(n=40, test_per_group=5))
    r = rows(root / "manifests" / "train.csv")[0]
    assert r["file_name"].startswith("../part")
    assert (root / "manifests" / r["file_name"]).is_file()


# ---- errors ---------------------------------------------------------------------------------------------


def assert_fails(result, out: Path, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.endswith(f"\nError: {message}\n") or result.stderr == f"Error: {message}\n"
    assert result.stderr.count("Error:") == 1 and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_missing_root(tmp_path):
    out = tmp_path / "out"
    assert_fails(run(tmp_path / "nope", "--out", out), out, f"dataset folder not found: {tmp_path / 'nope'}")


def test_unknown_attribute(utk, tmp_path):
    out = tmp_path / "out"
    assert_fails(
        run(utk, "--target", "Gender", "--out", out), out,
        "unknown UTKFace attribute 'Gender' (offered: Female, White, Young; closest: Female)",
    )


def test_bias_that_does_not_parse(utk, tmp_path):
    out = tmp_path / "out"
    assert_fails(
        run(utk, "--bias", "two", "--out", out), out,
        "cannot parse bias 'two' (use minority:majority like 1:9 or 1/9, or the minority share like 0.1)",
    )


def test_train_quota_not_fillable(utk, tmp_path):
    out = tmp_path / "out"
    assert_fails(
        run(utk, "--n", "200", "--test-per-group", "5", "--out", out), out,
        "cannot fill cell (target=0, protected=1) of the train set: asked 90, only 35 left after the test set",
    )


def test_test_quota_not_fillable(utk, tmp_path):
    out = tmp_path / "out"
    assert_fails(
        run(utk, "--test-per-group", "41", "--out", out), out,
        "cannot fill cell (target=0, protected=0) of the test set: asked 41, only 40 usable images",
    )


def test_nothing_left_for_val(utk, tmp_path):
    out = tmp_path / "out"
    assert_fails(
        run(utk, "--n", "62", "--bias", "1:30", "--test-per-group", "10", "--out", out), out,
        "no image left for the val set: cell (target=0, protected=1) is used up by train and test "
        "(lower --n or --test-per-group)",
    )


def test_no_images(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "oops.jpg").write_bytes(b"")
    out = tmp_path / "out"
    assert_fails(
        run(tmp_path / "ds", "--out", out), out,
        f"no UTKFace image found in {tmp_path / 'ds'} (expected names like 25_1_0_20170116174525125.jpg.chip.jpg)",
    )


def test_bad_numbers_are_usage_errors(utk, tmp_path):
    with pytest.raises(UsageError, match=r"^--test-per-group: must be at least 1, got 0$"):
        import_utkface(root=utk, out=tmp_path, config=UtkfaceConfig(test_per_group=0))
    with pytest.raises(UsageError, match=r"^--n: expected a whole number, got '10k'$"):
        import_utkface(root=utk, out=tmp_path, config=UtkfaceConfig(n="10k"))
    assert not any(tmp_path.iterdir())
