"""`aimfair data celeba`: a CelebA-shaped fixture of ~240 tiny JPEGs, both the .txt and the .csv label files."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core.errors import DataError
from aimfair_cli.core.manifest import read_manifest
from aimfair_cli.data.celeba import (
    MSG_BAD_VALUE,
    CelebaConfig,
    close_names,
    import_celeba,
    manifest_file_name,
)

ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
SMILING, MALE = ATTRS.index("Smiling"), ATTRS.index("Male")
# Existing train images per (Smiling, Male) cell: just enough for --n 200 --bias 1:9 (10/90/90/10) plus a few.
TRAIN_CELLS = {(0, 0): 12, (0, 1): 95, (1, 0): 93, (1, 1): 11}
N_VAL, N_TEST = 9, 7
N_MISSING = 3  # listed in the label files, no image on disk

runner = CliRunner()


@dataclass
class Entry:
    name: str
    partition: int
    values: list[int]  # 0/1 per attribute, written as -1/1
    exists: bool

    @property
    def cell(self) -> tuple[int, int]:
        return (self.values[SMILING], self.values[MALE])


def tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 90, 60)).save(buf, "JPEG")
    return buf.getvalue()


def make_entries() -> list[Entry]:
    rng = random.Random(7)
    specs = [(0, cell, True) for cell, k in TRAIN_CELLS.items() for _ in range(k)]
    specs += [(0, (0, 0), False)] + [(0, (1, 1), False)] * 2  # missing ones, in the small cells
    rng.shuffle(specs)  # interleave the cells so "file order" means something
    specs += [(1, (rng.randint(0, 1), rng.randint(0, 1)), True) for _ in range(N_VAL)]
    specs += [(2, (rng.randint(0, 1), rng.randint(0, 1)), True) for _ in range(N_TEST)]
    entries = []
    for i, (part, (smiling, male), exists) in enumerate(specs, 1):
        values = [rng.randint(0, 1) for _ in ATTRS]
        values[SMILING], values[MALE] = smiling, male
        entries.append(Entry(f"{i:06d}.jpg", part, values, exists))
    return entries


def build_celeba(root: Path, entries: list[Entry], *, form: str = "txt", layout: str = "flat") -> Path:
    """Write the official layout (or Kaggle's nested image folder, or the Drive Anno/Eval/Img folders)."""
    image_dir = {"flat": root / "img_align_celeba", "kaggle": root / "img_align_celeba" / "img_align_celeba",
                 "drive": root / "Img" / "img_align_celeba"}[layout]
    attr_dir = root / "Anno" if layout == "drive" else root
    part_dir = root / "Eval" if layout == "drive" else root
    for d in (image_dir, attr_dir, part_dir):
        d.mkdir(parents=True, exist_ok=True)
    jpeg = tiny_jpeg()
    for e in entries:
        if e.exists:
            (image_dir / e.name).write_bytes(jpeg)
    (image_dir / "999999.jpg").write_bytes(jpeg)  # on disk but in no label file: ignored
    pm = lambda v: 1 if v else -1  # noqa: E731
    if form == "txt":
        lines = [str(len(entries)), " ".join(ATTRS) + " "]
        lines += [e.name + " " + " ".join(f"{pm(v):>2}" for v in e.values) for e in entries]
        (attr_dir / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (part_dir / "list_eval_partition.txt").write_text("".join(f"{e.name} {e.partition}\n" for e in entries))
    else:
        with open(attr_dir / "list_attr_celeba.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image_id", *ATTRS])
            w.writerows([e.name, *(pm(v) for v in e.values)] for e in entries)
        with open(part_dir / "list_eval_partition.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image_id", "partition"])
            w.writerows([e.name, e.partition] for e in entries)
    return root


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    return make_entries()


@pytest.fixture(scope="module")
def celeba(tmp_path_factory, entries) -> Path:
    return build_celeba(tmp_path_factory.mktemp("celeba"), entries)


def expected_train(entries: list[Entry], quotas: dict[tuple[int, int], int]) -> list[str]:
    left, names = dict(quotas), []
    for e in entries:
        if e.partition == 0 and e.exists and left[e.cell] > 0:
            left[e.cell] -= 1
            names.append(e.name)
    return names


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def cells(path: Path) -> list[int]:
    m = read_manifest(path)
    return [sum(1 for r in m.rows if (r["target"], r["protected"]) == c) for c in ((0, 0), (0, 1), (1, 0), (1, 1))]


def run(*args: str):
    return runner.invoke(app, ["data", "celeba", *map(str, args)])


# ---- what is written ------------------------------------------------------------------------------------


def test_quotas_are_exact(celeba, tmp_path):
    out = tmp_path / "out"
    result = run(celeba, "--n", "200", "--bias", "1:9", "--out", out)
    assert result.exit_code == 0, result.output
    assert cells(out / "train.csv") == [10, 90, 90, 10]
    # the summary table on stdout shows the same counts
    train_line = next(line for line in result.stdout.splitlines() if "train" in line and "200" in line)
    assert [int(x) for x in train_line.replace("│", " ").split()[1:]] == [10, 90, 90, 10, 200]


def test_bias_forms_are_equivalent(celeba, tmp_path):
    outputs = []
    for i, form in enumerate(("1:9", "1/9", "0.1")):
        out = tmp_path / str(i)
        import_celeba(root=celeba, out=out, config=CelebaConfig(n=200, bias=form))
        outputs.append((out / "train.csv").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_train_is_first_images_in_file_order_and_only_existing(celeba, entries, tmp_path):
    result = import_celeba(root=celeba, out=tmp_path, config=CelebaConfig(n=200))
    names = [Path(r["file_name"]).name for r in rows(tmp_path / "train.csv")]
    assert names == expected_train(entries, {(0, 0): 10, (0, 1): 90, (1, 0): 90, (1, 1): 10})
    # cell (1,1) holds 11 existing images and 2 missing ones: asking for 11 takes every existing one, no missing one
    import_celeba(root=celeba, out=tmp_path / "all", config=CelebaConfig(n=44, bias="1:1"))
    names = {Path(r["file_name"]).name for r in rows(tmp_path / "all" / "train.csv")}
    assert not names & {e.name for e in entries if not e.exists}
    assert result.warnings == [
        f"{N_MISSING} image(s) listed in list_attr_celeba.txt are not in {celeba / 'img_align_celeba'}; skipped"
    ]


def test_labels_and_columns(celeba, entries, tmp_path):
    import_celeba(root=celeba, out=tmp_path, config=CelebaConfig(n=200))
    by_name = {e.name: e for e in entries}
    got = rows(tmp_path / "train.csv")
    assert list(got[0]) == ["file_name", "target", "protected", "split"]
    for r in got:
        e = by_name[Path(r["file_name"]).name]
        assert (int(r["target"]), int(r["protected"])) == e.cell and r["split"] == "train"


def test_val_and_test_are_the_whole_official_partitions(celeba, entries, tmp_path):
    import_celeba(root=celeba, out=tmp_path, config=CelebaConfig(n=200))
    for split, part in (("val", 1), ("test", 2)):
        got = [(Path(r["file_name"]).name, int(r["target"]), int(r["protected"]), r["split"])
               for r in rows(tmp_path / f"{split}.csv")]
        assert got == [(e.name, *e.cell, split) for e in entries if e.partition == part]


def test_any_attribute_pair(celeba, entries, tmp_path):
    young, glasses = ATTRS.index("Young"), ATTRS.index("Eyeglasses")
    cfg = CelebaConfig(target="Young", protected="Eyeglasses", n=16, bias="1:1")
    import_celeba(root=celeba, out=tmp_path, config=cfg)
    by_name = {e.name: e for e in entries}
    got = rows(tmp_path / "train.csv")
    assert cells(tmp_path / "train.csv") == [4, 4, 4, 4]
    for r in got:
        e = by_name[Path(r["file_name"]).name]
        assert (int(r["target"]), int(r["protected"])) == (e.values[young], e.values[glasses])


@pytest.mark.parametrize("form,layout", [("csv", "flat"), ("txt", "kaggle"), ("csv", "drive")])
def test_csv_form_and_other_layouts_match_the_txt_flat_one(celeba, entries, tmp_path, form, layout):
    other = build_celeba(tmp_path / "ds", entries, form=form, layout=layout)
    import_celeba(root=celeba, out=tmp_path / "a", config=CelebaConfig(n=200))
    import_celeba(root=other, out=tmp_path / "b", config=CelebaConfig(n=200))
    for split in ("train", "val", "test"):
        a = [(Path(r.pop("file_name")).name, r) for r in rows(tmp_path / "a" / f"{split}.csv")]
        b = [(Path(r.pop("file_name")).name, r) for r in rows(tmp_path / "b" / f"{split}.csv")]
        assert a == b


def test_file_names_absolute_outside_root_relative_inside(celeba, tmp_path):
    import_celeba(root=celeba, out=tmp_path / "outside", config=CelebaConfig(n=200))
    first = rows(tmp_path / "outside" / "train.csv")[0]["file_name"]
    assert Path(first).is_absolute() and Path(first).is_file()

    inside = celeba / "runs" / "biased"
    try:
        import_celeba(root=celeba, out=inside, config=CelebaConfig(n=200))
        m = read_manifest(inside / "val.csv")
        assert m.rows[0]["file_name"].startswith("../../img_align_celeba/")
        assert all(m.image_path(r).is_file() for r in m.rows)
    finally:
        for f in inside.iterdir():
            f.unlink()
        inside.rmdir()
        inside.parent.rmdir()


def test_manifest_file_name_rule(tmp_path):
    root, img = tmp_path / "ds", tmp_path / "ds" / "img" / "a.jpg"
    assert manifest_file_name(img, out=tmp_path / "elsewhere", root=root) == str(img)
    assert manifest_file_name(img, out=root / "out", root=root) == "../img/a.jpg"
    assert manifest_file_name(img, out=root, root=root) == "img/a.jpg"
    assert manifest_file_name(img, out=tmp_path / "ds2", root=root) == str(img)  # a sibling sharing a prefix


def test_seed_draws_a_random_but_reproducible_subset(celeba, entries, tmp_path):
    for name in ("a", "b"):
        import_celeba(root=celeba, out=tmp_path / name, config=CelebaConfig(n=100, seed=3))
    a = (tmp_path / "a" / "train.csv").read_bytes()
    assert a == (tmp_path / "b" / "train.csv").read_bytes()
    assert cells(tmp_path / "a" / "train.csv") == [5, 45, 45, 5]
    names = [Path(r["file_name"]).name for r in rows(tmp_path / "a" / "train.csv")]
    assert names != expected_train(entries, {(0, 0): 5, (0, 1): 45, (1, 0): 45, (1, 1): 5})
    assert names == sorted(names)  # still listed in file order


def test_resolved_config_and_json(celeba, tmp_path):
    out = tmp_path / "out"
    result = run(celeba, "--n", "200", "--target", "Smiling", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    import json

    obj = json.loads(result.stdout)
    assert obj["splits"]["train"]["cells"] == {"0,0": 10, "0,1": 90, "1,0": 90, "1,1": 10}
    assert obj["splits"]["val"]["n"] == N_VAL and obj["splits"]["test"]["n"] == N_TEST
    cfg = yaml.safe_load((out / "data_celeba.config.yaml").read_text())
    assert cfg == {"data_celeba": {"root": str(celeba), "out": str(out), "target": "Smiling", "protected": "Male",
                                   "bias": "1:9", "n": 200, "seed": None}}


def test_config_file_section_is_used(celeba, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("aimfair.yaml").write_text("data_celeba:\n  n: 100\n  bias: '1:9'\n")
    result = run(celeba, "--out", "out")
    assert result.exit_code == 0, result.output
    assert cells(tmp_path / "out" / "train.csv") == [5, 45, 45, 5]
    result = run(celeba, "--out", "out2", "--n", "40")  # the flag wins over the file
    assert cells(tmp_path / "out2" / "train.csv") == [2, 18, 18, 2]
    assert run(celeba).exit_code == 0  # the run folder's data/ by default
    assert cells(tmp_path / "data" / "train.csv") == [5, 45, 45, 5]


def test_help_states_the_dataclass_defaults():
    result = runner.invoke(app, ["data", "celeba", "--help"])
    text = " ".join(result.stdout.split())
    d = CelebaConfig()
    for value in (d.target, d.protected, d.bias, d.n):
        assert f"[default: {value}]" in text


# ---- errors: one line, exit 1, nothing written ----------------------------------------------------------


def assert_fails(result, out: Path, message: str) -> None:
    assert result.exit_code == 1, result.output
    # stderr may hold a progress line first; the message is the last line, once, and no traceback
    assert result.stderr.endswith(f"\nError: {message}\n") or result.stderr == f"Error: {message}\n"
    assert result.stderr.count("Error:") == 1 and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_missing_root(tmp_path):
    out = tmp_path / "out"
    assert_fails(run(tmp_path / "nope", "--out", out), out, f"dataset folder not found: {tmp_path / 'nope'}")


def test_missing_attribute_file(tmp_path, entries):
    root = build_celeba(tmp_path / "ds", entries[:5])
    (root / "list_attr_celeba.txt").unlink()
    out = tmp_path / "out"
    assert_fails(
        run(root, "--out", out), out,
        f"attribute file not found in {root}: expected list_attr_celeba.txt or list_attr_celeba.csv",
    )


def test_missing_image_folder(tmp_path, entries):
    root = build_celeba(tmp_path / "ds", entries[:5])
    for f in (root / "img_align_celeba").iterdir():
        f.unlink()
    (root / "img_align_celeba").rmdir()
    out = tmp_path / "out"
    assert_fails(
        run(root, "--out", out), out,
        f"image folder not found: {root / 'img_align_celeba'} (expected the official img_align_celeba/ folder)",
    )


def test_unknown_attribute_lists_close_names(celeba, tmp_path):
    out = tmp_path / "out"
    assert_fails(
        run(celeba, "--target", "Smilling", "--out", out), out,
        f"unknown attribute 'Smilling' in {celeba / 'list_attr_celeba.txt'} (closest: Smiling, Big_Lips, Sideburns)",
    )
    assert close_names("male", ATTRS, 1) == "Male"  # case is ignored when ranking


def test_bias_that_does_not_parse(celeba, tmp_path):
    out = tmp_path / "out"
    assert_fails(
        run(celeba, "--bias", "9:1x", "--out", out), out,
        "cannot parse bias '9:1x' (use minority:majority like 1:9 or 1/9, or the minority share like 0.1)",
    )


def test_quota_not_fillable(celeba, tmp_path):
    out = tmp_path / "out"
    assert_fails(
        run(celeba, "--n", "400", "--out", out), out,
        "cannot fill cell (target=0, protected=0): asked 20, only 12 in the train partition",
    )


def test_target_equals_protected(celeba, tmp_path):
    out = tmp_path / "out"
    assert_fails(
        run(celeba, "--target", "Male", "--out", out), out,
        "target and protected must be different attributes, got 'Male' for both",
    )


def test_failed_run_keeps_earlier_outputs_untouched(celeba, tmp_path):
    out = tmp_path / "out"
    assert run(celeba, "--n", "200", "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run(celeba, "--n", "400", "--out", out).exit_code == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_bad_value_names_file_line_and_attribute(tmp_path, entries):
    root = build_celeba(tmp_path / "ds", entries[:5])
    path = root / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    fields = lines[4].split()
    fields[1 + SMILING] = "2"
    lines[4] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as exc:
        import_celeba(root=root, out=tmp_path / "out", config=CelebaConfig(n=2, bias="1:1"))
    assert str(exc.value) == MSG_BAD_VALUE.format(path=path, line=5, name="Smiling", value="2")


def test_short_row_names_file_and_line(tmp_path, entries):
    root = build_celeba(tmp_path / "ds", entries[:5], form="csv")
    path = root / "list_attr_celeba.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"^{path}: line 3: expected 41 fields, got 40$"):
        import_celeba(root=root, out=tmp_path / "out", config=CelebaConfig(n=2, bias="1:1"))
