"""Issue 9 §5, one-line errors where the README promises them: non-UTF-8 text files, checkpoint and mask metadata
with missing fields, wrong types or impossible values, LLM servers that answer with something other than a chat
completion, JSONL lines with absurd numbers or nesting, hand-edited synth bookkeeping. The tool's errors exit 1,
Click's usage errors exit 2. Every case: the exact stderr line, inputs byte-identical, nothing left behind."""

from __future__ import annotations

import json

import pytest
import torch

from _safety import CPU, make_checkpoint, make_data, make_mask, make_model, private_copy, raw_checkpoint, refused, run
from aimfair_cli.core.fsio import MSG_NOT_UTF8
from aimfair_cli.core.manifest import MSG_BAD_JSON, MSG_BAD_LABEL
from aimfair_cli.core.tasks import find_prompt_file
from aimfair_cli.masking.maskfile import MSG_MASK_EMPTY_TENSOR, MSG_MASK_META, MSG_NOT_MASK
from aimfair_cli.stages.synth import MSG_BAD_PART_ROW
from aimfair_cli.training.checkpoint import MSG_META_BAD, MSG_META_MISSING, MSG_MISMATCH, state_tensors
from aimfair_cli.writers.openai_writer import MSG_NOT_COMPLETION

LATIN1 = "file_name,target,protected\nimg/caf\xe9.png,1,0\n".encode("latin-1")  # \xe9 alone is not UTF-8


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    make_data(root)
    make_checkpoint(root / "model.safetensors")
    return root


@pytest.fixture
def ws(base, tmp_path, monkeypatch):
    return private_copy(base, tmp_path, monkeypatch)



# ---- text files that are not UTF-8 -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad.csv", "bad.jsonl"])
def test_manifest_not_utf8(ws, name):
    (ws / name).write_bytes(LATIN1 if name.endswith(".csv") else b'{"file_name": "caf\xe9.png", "target": 1}\n')
    refused(ws, ["eval", "--model", "model.safetensors", "--data", name, *CPU], MSG_NOT_UTF8.format(path=name))


def test_config_file_not_utf8(ws):
    (ws / "bad.yaml").write_bytes(b"eval:\n  workers: 0 # caf\xe9\n")
    refused(ws, ["eval", "--config", "bad.yaml"], MSG_NOT_UTF8.format(path="bad.yaml"))


def test_prompt_file_not_utf8(ws):
    text = find_prompt_file("smiling_male").read_bytes()
    (ws / "p.yaml").write_bytes(text + b"# caf\xe9\n")
    refused(ws, ["synth", "--prompts", "p.yaml", "--group", "smiling_male", "--n", "1", "--out", "synth"],
            MSG_NOT_UTF8.format(path="p.yaml"))


def test_celeba_attribute_file_not_utf8(ws):
    from test_data_celeba import build_celeba, make_entries

    root = build_celeba(ws / "celeba", make_entries())
    attr = root / "list_attr_celeba.txt"
    attr.write_bytes(attr.read_bytes() + b"caf\xe9.jpg\n")
    refused(ws, ["data", "celeba", "celeba", "--out", "out", "--n", "20"], MSG_NOT_UTF8.format(path="celeba/list_attr_celeba.txt"))


# ---- checkpoint metadata -----------------------------------------------------------------------------------


GOOD = {"format": 1, "arch": "resnet18", "image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "target": None,
        "protected": None, "config": {}}
BAD_META = {
    "no image_size": ({k: v for k, v in GOOD.items() if k != "image_size"}, MSG_META_MISSING, {"field": "image_size"}),
    "image_size 0": ({**GOOD, "image_size": 0}, MSG_META_BAD, {"field": "image_size", "value": "0"}),
    "image_size huge": ({**GOOD, "image_size": 100000}, MSG_META_BAD, {"field": "image_size", "value": "100000"}),
    "image_size text": ({**GOOD, "image_size": "32"}, MSG_META_BAD, {"field": "image_size", "value": '"32"'}),
    "std zeros": ({**GOOD, "std": [0, 0, 0]}, MSG_META_BAD, {"field": "std", "value": "[0, 0, 0]"}),
    "mean short": ({**GOOD, "mean": [0.5]}, MSG_META_BAD, {"field": "mean", "value": "[0.5]"}),
    "target number": ({**GOOD, "target": 3}, MSG_META_BAD, {"field": "target", "value": "3"}),
    "config list": ({**GOOD, "config": []}, MSG_META_BAD, {"field": "config", "value": "[]"}),
    "format text": ({**GOOD, "format": "1"}, MSG_META_BAD, {"field": "format", "value": '"1"'}),
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_checkpoint_metadata_is_validated(ws, case):
    from aimfair_cli.training.checkpoint import _RULES

    meta, msg, fields = BAD_META[case]
    raw_checkpoint(ws / "bad.safetensors", meta)
    extra = {"rule": _RULES[fields["field"]]} if msg is MSG_META_BAD else {}
    refused(ws, ["eval", "--model", "bad.safetensors", "--data", "data/test.csv", *CPU],
            msg.format(path="bad.safetensors", **fields, **extra))


def test_checkpoint_with_a_zero_size_tensor(ws):
    state = state_tensors(make_model())
    state["fc.weight"] = torch.zeros(0, 512)
    raw_checkpoint(ws / "bad.safetensors", GOOD, state)
    refused(ws, ["eval", "--model", "bad.safetensors", "--data", "data/test.csv", *CPU],
            MSG_MISMATCH.format(path="bad.safetensors", arch="resnet18",
                                detail="size mismatch for fc.weight: copying a param with shape torch.Size([0, 512]) "
                                       "from checkpoint, the shape in current model is torch.Size([1, 512])."))


# ---- mask metadata -----------------------------------------------------------------------------------------


def _finetune(mask):
    return ["finetune", "--model", "model.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
            "--mask", mask, "-o", "ft.safetensors", *CPU]


def _rewrite_mask_meta(path, change):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["aimfair_mask"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    change(meta, tensors)
    save_file(tensors, str(path), metadata={"aimfair_mask": json.dumps(meta)})


@pytest.mark.parametrize("case, change, field, rule", [
    ("no shapes", lambda m, t: m.pop("shapes"), "shapes",
     "a mapping of tensor names to shapes (lists of positive whole numbers)"),
    ("shape zero", lambda m, t: m["shapes"].update({"fc.bias": [0]}), "shapes",
     "a mapping of tensor names to shapes (lists of positive whole numbers)"),
    ("selected text", lambda m, t: m.update({"selected": "fc.weight"}), "selected", "a list of tensor names"),
    ("sizes negative", lambda m, t: m.update({"sizes": {"synthetic_balanced": -4}}), "sizes",
     "a mapping of set names to positive whole numbers"),
])
def test_mask_metadata_is_validated(ws, case, change, field, rule):
    make_mask(ws / "m.safetensors")
    _rewrite_mask_meta(ws / "m.safetensors", change)
    refused(ws, _finetune("m.safetensors"), MSG_MASK_META.format(path="m.safetensors", field=field, rule=rule))


def test_mask_with_an_empty_tensor(ws):
    make_mask(ws / "m.safetensors")
    _rewrite_mask_meta(ws / "m.safetensors", lambda m, t: t.update({"fc.bias": torch.zeros(0, dtype=torch.bool)}))
    refused(ws, _finetune("m.safetensors"), MSG_MASK_EMPTY_TENSOR.format(path="m.safetensors", name="fc.bias"))


def test_mask_metadata_not_a_mapping(ws):
    make_mask(ws / "m.safetensors")
    from safetensors.torch import save_file

    save_file({"fc.bias": torch.ones(1, dtype=torch.bool)}, str(ws / "m.safetensors"),
              metadata={"aimfair_mask": "[1, 2]"})
    refused(ws, _finetune("m.safetensors"), MSG_NOT_MASK.format(path="m.safetensors"))


# ---- LLM servers that do not answer with a chat completion ---------------------------------------------------


@pytest.mark.parametrize("body, what", [
    ("<html>not json</html>", "no choices list"),
    ({}, "no choices list"),
    ({"choices": []}, "an empty choices list"),
    ([{"choices": []}], "no choices list"),
    ({"choices": [{"index": 0}]}, "a choice without a message"),
    ({"choices": [{"message": {"content": {"prompts": []}}}]}, "the message content is not text"),
])
def test_llm_reply_that_is_not_a_chat_completion(ws, monkeypatch, body, what):
    from test_llm_writers import ScriptedServer

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedServer([(200, {}, body, 0.0)] * 10) as server:
        refused(ws, ["prompts", "--task", "smiling_male", "--per-group", "2", "--writer", "openai", "--model", "m",
                     "--base-url", server.base_url, "--out", "p.yaml"],
                MSG_NOT_COMPLETION.format(url=server.base_url, what=what))


# ---- JSONL lines with absurd numbers or nesting ------------------------------------------------------------


@pytest.mark.parametrize("line, message", [
    ('{"file_name": "img/0.png", "target": ' + "7" * 5000 + "}", MSG_BAD_JSON.format(path="m.jsonl", row=1)),
    ('{"file_name": "img/0.png", "target": ' + "[" * 100000 + "]" * 100000 + "}",
     MSG_BAD_JSON.format(path="m.jsonl", row=1)),
    ('{"file_name": "img/0.png", "protected": 0, "target": 1e999}',
     MSG_BAD_LABEL.format(path="m.jsonl", row=1, column="target", value=float("inf"))),
    ('{"file_name": "img/0.png", "protected": 0, "target": NaN}',
     MSG_BAD_LABEL.format(path="m.jsonl", row=1, column="target", value=float("nan"))),
])
def test_jsonl_absurd_numbers_and_nesting(ws, line, message):
    (ws / "m.jsonl").write_text(line + "\n")
    refused(ws, ["eval", "--model", "model.safetensors", "--data", "m.jsonl", *CPU], message)


# ---- synth bookkeeping ---------------------------------------------------------------------------------------


def test_synth_part_row_with_a_non_numeric_index(ws):
    assert run("synth", "--group", "smiling_male", "--n", "2", "--out", "synth").exit_code == 0
    part = ws / "synth" / ".parts" / "smiling_male.0-of-1.jsonl"
    rows = part.read_text().splitlines()
    rows[1] = rows[1].replace('"index": 1', '"index": "one"')
    part.write_text("\n".join(rows) + "\n")
    refused(ws, ["synth", "--group", "smiling_male", "--n", "3", "--out", "synth"],
            MSG_BAD_PART_ROW.format(path=part.relative_to(ws), line=2, field="index", rule="a whole number from 0",
                                    value='"one"'))


# ---- exit codes --------------------------------------------------------------------------------------------


def test_usage_errors_exit_2_and_tool_errors_exit_1(ws):
    usage = run("eval", "--batch-size", "many")
    assert usage.exit_code == 2 and "Traceback" not in usage.output
    refused(ws, ["eval", "--model", "model.safetensors", "--data", "missing.csv", *CPU],
            "manifest not found: missing.csv")
