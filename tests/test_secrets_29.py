"""Issue 29: credentials anywhere in a URL are never recorded or printed, an API key that is not ASCII is one line,
a pickle-only model folder is refused before loading, prompts are bounded in characters and must be text."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core.redact import redact_text, redact_url
from aimfair_cli.core.tasks import MAX_PROMPT_CHARS, MSG_PROMPT_NOT_TEXT, MSG_PROMPT_TOO_LONG

from test_llm_writers import KEY, ScriptedServer, prompts_reply, tiny_lm  # noqa: F401 (tiny_lm: a fixture)
from test_secrets import ask, env, error_line, files  # noqa: F401 (env: the autouse fixture, key set, no proxy)

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})


def invoke(*args: str):
    # the fake server writes whole prompts: the free mode (the composed mode has its own tests)
    return runner.invoke(app, ["prompts", "--task", "smiling_male", "--writer", "openai", "--model", "test-model",
                               "--mode", "free", *args])


@pytest.mark.parametrize("url, shown", [
    ("http://user:s3cret-pw@host:8000/v1", "http://***@host:8000/v1"),
    ("https://tok3n-only@host/v1", "https://***@host/v1"),
    ("http://host/v1?api_key=abcdef&x=1", "http://host/v1?api_key=***&x=1"),
    ("http://host/v1?access_token=abcdef", "http://host/v1?access_token=***"),
    ("http://host/v1", "http://host/v1"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert redact_text(f"cannot reach {url} now") == f"cannot reach {shown} now"


@pytest.mark.parametrize("userinfo", ["user:s3cret-pw@", "s3cret-pw@"])
def test_url_credentials_never_reach_a_file_or_the_console(tmp_path, userinfo):
    def reply(body):
        target, protected = ask(body)
        return prompts_reply(f"Portrait face photo of a {target} {protected} with curly hair.")

    with ScriptedServer(reply) as server:
        url = server.base_url.replace("http://", "http://" + userinfo)
        result = invoke("--base-url", url, "--per-group", "1", "--out", "p.yaml", "--log-file", "run.log")
    assert result.exit_code == 0, result.output
    written = files(tmp_path)
    assert sorted(written) == ["p.config.yaml", "p.yaml", "run.log"]
    assert all(b"s3cret-pw" not in data for data in written.values())
    assert "s3cret-pw" not in result.output
    assert b"***@" in written["p.config.yaml"] and b"***@" in written["p.yaml"]


@pytest.mark.parametrize("key", ["sk-caf\u00e9", "sk-\u201cquoted\u201d", "sk-non\u00a0breaking", "sk-line\nbreak"])
def test_an_api_key_that_is_not_ascii_is_one_line(tmp_path, monkeypatch, key):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with ScriptedServer(lambda body: prompts_reply("x")) as server:
        result = invoke("--base-url", server.base_url, "--per-group", "1", "--out", "p.yaml")
    assert result.exit_code == 1
    assert error_line(result) == ("Error: $OPENAI_API_KEY holds characters that are not printable ASCII (a typographic "
                                  "quote, a non-breaking space, a line break?); an API key is plain ASCII: export it "
                                  "again")
    assert key not in result.output and files(tmp_path) == {}


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "sub/weights.pth"])
def test_a_pickle_only_transformers_folder_is_refused_before_loading(tmp_path, weights):
    folder = tmp_path / "lm"
    (folder / Path(weights).parent).mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / weights).write_bytes(b"\x80\x04not really a pickle")
    result = runner.invoke(app, ["prompts", "--task", "smiling_male", "--writer", "transformers", "--model",
                                 str(folder), "--per-group", "1", "--out", "p.yaml"])
    assert result.exit_code == 1
    assert error_line(result) == (f"Error: {folder} holds only pickle weights ({weights}), which aimfair never loads: it "
                                  "needs model.safetensors (save the model with save_pretrained(..., "
                                  "safe_serialization=True))")
    assert not (tmp_path / "p.yaml").exists()


def _prompt_file(path: Path, prompt) -> Path:
    import yaml

    from aimfair_cli.core.tasks import find_prompt_file

    data = yaml.safe_load(find_prompt_file("smiling_male").read_text())
    data["groups"]["smiling_male"]["prompts"][0] = prompt
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("prompt, message", [
    (42, MSG_PROMPT_NOT_TEXT.format(path="p.yaml", group="smiling_male", i=1, value=42)),
    (3.5, MSG_PROMPT_NOT_TEXT.format(path="p.yaml", group="smiling_male", i=1, value=3.5)),
    (None, MSG_PROMPT_NOT_TEXT.format(path="p.yaml", group="smiling_male", i=1, value=None)),
    ("smiling man " + "x" * 20_000, MSG_PROMPT_TOO_LONG.format(path="p.yaml", group="smiling_male", i=1,
                                                                n=20_012, max=MAX_PROMPT_CHARS)),
])
def test_a_prompt_that_is_not_bounded_text_is_refused_before_synth(tmp_path, prompt, message):
    _prompt_file(tmp_path / "p.yaml", prompt)
    before = files(tmp_path)
    result = runner.invoke(app, ["synth", "--prompts", "p.yaml", "--group", "smiling_male", "--n", "2", "--size", "32",
                                 "--out", "sy"])
    assert result.exit_code == 1
    assert error_line(result) == f"Error: {message}"
    assert files(tmp_path) == before and not (tmp_path / "sy").exists()


def test_a_long_single_word_prompt_from_a_writer_is_rejected():
    from aimfair_cli.core.tasks import TASKS, check_prompt

    task = TASKS["smiling_male"]
    group = task.group("smiling_male")
    assert check_prompt("smiling man " + "y" * 5000, task, group) == f"longer than {MAX_PROMPT_CHARS} characters"


def test_synth_rerun_at_another_size_is_refused(tmp_path):
    first = runner.invoke(app, ["synth", "--task", "smiling_male", "--group", "all", "--n", "1", "--size", "32",
                                "--out", "sy"])
    assert first.exit_code == 0, first.output
    before = files(tmp_path)
    for size in ("48", "64"):
        again = runner.invoke(app, ["synth", "--task", "smiling_male", "--group", "all", "--n", "1", "--size", size,
                                    "--out", "sy"])
        assert again.exit_code == 1
        assert error_line(again) == (f"Error: sy holds images made with other generator settings (size 32 -> {size}); "
                                     "use another --out or remove the folder")
        assert files(tmp_path) == before


@pytest.mark.parametrize("body", ["groups: [1, 2\n", "groups: {smiling_male: 'a string'}\n", "\x00\x01binary"])
def test_a_corrupt_partial_prompt_file_is_warned_about(tmp_path, body, caplog):
    from aimfair_cli.stages.prompts import partial_path

    (tmp_path / partial_path("p.yaml")).write_text(body)
    result = runner.invoke(app, ["prompts", "--task", "smiling_male", "--writer", "template", "--per-group", "1",
                                 "--out", "p.yaml"])
    assert result.exit_code == 0, result.output
    assert f"{partial_path('p.yaml')} is corrupt" in result.stderr


@pytest.mark.parametrize("blocks", [8, 64])
def test_synth_stopped_by_a_file_size_limit_leaves_nothing(tmp_path, blocks):
    import subprocess
    import sys

    aimfair = Path(sys.executable).parent / "aimfair"
    proc = subprocess.run(["bash", "-c", f"ulimit -f {blocks}; exec {aimfair} synth --task smiling_male --group all "
                           "--n 2 --size 512 --out runs/sy"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "AIMFAIR_DEBUG": "", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    # the message names the image the user asked for, not its temporary file
    assert re.fullmatch(r"Error: cannot write runs/sy/smiling_male/\d{6}\.png: File too large",
                        proc.stderr.rstrip("\n").splitlines()[-1])
    assert files(tmp_path) == {} and not (tmp_path / "runs").exists()


HF_SECRET = "hf_s3cretHubToken"


def _transformers_case(case: str, root: Path, tiny: Path) -> tuple[str, str]:
    """(--model value, the start of the expected error line) for one way the transformers writer can fail."""
    import shutil

    if case == "url with credentials":
        return "http://user:s3cret-pw@host/models/lm", "Error: model folder not found: http://***@host/models/lm"
    if case == "not in the offline cache":
        return "org/absent-model", "Error: model 'org/absent-model' is not in the local Hugging Face cache"
    folder = root / "lm"
    shutil.copytree(tiny / "chat", folder)
    if case == "corrupt config":
        (folder / "config.json").write_text("{not json")
    elif case == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    return str(folder), {"corrupt config": f"Error: cannot load transformers model '{folder}'",
                         "truncated weights": f"Error: cannot load transformers model '{folder}'",
                         "garbage replies": "Error: writer produced 0 of 1 valid prompts"}[case]


@pytest.mark.parametrize("case", ["url with credentials", "not in the offline cache", "corrupt config",
                                  "truncated weights", "garbage replies"])
def test_the_transformers_writer_fails_in_one_line_without_a_secret(tmp_path, monkeypatch, tiny_lm, case):
    """Every way the local writer fails is one line that shows no credential: not the Hub token, not the API key
    of the other writer, not a password inside a URL given as --model; and nothing is written."""
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, expected = _transformers_case(case, tmp_path / "models", tiny_lm)
    before = files(tmp_path)
    result = runner.invoke(app, ["prompts", "--task", "smiling_male", "--writer", "transformers", "--model", model,
                                 "--per-group", "1", "--max-rounds", "1", "--max-new-tokens", "8", "--out", "p.yaml",
                                 "--log-file", "run.log"])
    assert result.exit_code == 1
    assert error_line(result).startswith(expected)
    written = files(tmp_path)
    assert set(written) - set(before) == {"run.log"}
    for secret in (HF_SECRET, KEY, "s3cret-pw"):
        assert secret not in result.output
        assert all(secret.encode() not in data for data in written.values())
