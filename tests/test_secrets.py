"""Issue 9 §4: the API key never reaches a file, and a server that never answers ends the run in bounded time.

Every case runs `aimfair prompts --writer openai` as a user would, against a real HTTP server on 127.0.0.1
(tests/test_llm_writers.py's scripted chat-completions server, or a socket that accepts and never answers), and
checks the exit status, the one stderr line, and every file the command left (searched for the key)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core.errors import UsageError
from aimfair_cli.core.tasks import TASKS, check_prompt, load_prompt_file
from aimfair_cli.stages.prompts import partial_path
from aimfair_cli.writers import chat, openai_writer

from test_llm_writers import KEY, PROXY_VARS, ScriptedServer, fail, ok, prompts_reply

runner = CliRunner()
TASK = TASKS["smiling_male"]


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    """The key in $OPENAI_API_KEY, no proxy, and the run folder as the working directory."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def error_line(result) -> str:
    """The one error line: stderr's last line, present once, no traceback."""
    assert result.stderr.count("Error: ") == 1, result.stderr
    assert "Traceback" not in result.output
    return result.stderr.strip().splitlines()[-1]


def invoke(*args: str):
    # the fake server writes whole prompts: the free mode (the composed mode has its own tests)
    return runner.invoke(app, ["prompts", "--task", "smiling_male", "--writer", "openai", "--model", "test-model",
                               "--mode", "free", *args])


def ask(body: dict) -> tuple[str, str]:
    """(target, protected) phrases of the group a request asks for."""
    text = body["messages"][1]["content"]
    start = text.index("person who is ") + len("person who is ")
    target, protected = text[start:text.index(".\n", start)].split(" and ")
    return target, protected


# ---- --api-key-env takes a NAME -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [KEY, "sk-proj-abc123", "my-api-key", "1ST_KEY", "OPENAI API KEY", "KEY=abc", ""])
def test_api_key_env_that_is_not_a_variable_name_is_refused_before_any_request(tmp_path, value):
    with ScriptedServer([]) as server:
        result = invoke("--base-url", server.base_url, "--api-key-env", value, "--out", "p.yaml")
    assert result.exit_code == 1
    assert error_line(result) == "Error: " + openai_writer.MSG_BAD_KEY_ENV
    assert server.requests == []  # refused before any request
    if value:
        assert value not in result.output  # the message never repeats the value: it may be the key
    assert KEY not in result.output
    assert files(tmp_path) == {}  # no prompt file, no partial file, no config sidecar


def test_api_key_env_from_the_config_file_is_checked_too(tmp_path):
    config = tmp_path / "aimfair.yaml"
    config.write_text(f"prompts:\n  api_key_env: {KEY}\n")
    before = files(tmp_path)
    with ScriptedServer([]) as server:
        result = invoke("--base-url", server.base_url, "--out", "p.yaml")
    assert result.exit_code == 1
    assert error_line(result) == "Error: " + openai_writer.MSG_BAD_KEY_ENV
    assert server.requests == [] and files(tmp_path) == before


def test_a_good_variable_name_is_recorded_and_the_key_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("_My_Key2", KEY)
    monkeypatch.delenv("OPENAI_API_KEY")

    def reply(body):
        target, protected = ask(body)
        return prompts_reply(f"Portrait face photo of a {target} {protected} with curly hair.")

    with ScriptedServer(reply) as server:
        result = invoke("--base-url", server.base_url, "--api-key-env", "_My_Key2", "--per-group", "1",
                        "--out", "p.yaml")
    assert result.exit_code == 0, result.output
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in server.requests)
    written = files(tmp_path)
    assert sorted(written) == ["p.config.yaml", "p.yaml"]
    assert all(KEY.encode() not in data for data in written.values())
    assert b"api_key_env: _My_Key2" in written["p.config.yaml"]


# ---- a server that echoes the key ---------------------------------------------------------------------------


def test_an_echoed_key_is_scrubbed_and_its_prompts_refused(tmp_path):
    """The server puts the key into prompts (plainly and as JSON \\u escapes) and into the text around the JSON.
    Those prompts are rejected, the model is told why without the key, and no written file holds it — neither
    the partial file of a run that fails half-way nor the final file and config sidecar of the rerun."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)

    def leaky(target, protected):
        good = [f"Portrait face photo of a {target} {protected} with {d}." for d in ("curly hair", "glasses")]
        bad = f"Portrait face photo of a {target} {protected}, token {KEY}."
        bad_escaped = f"A {target} {protected} holding a sign that reads {escaped}."
        text = '{"prompts": ["%s", "%s", "%s"]}' % (bad, bad_escaped, good[0])
        return ok(f"Your key is {KEY}.\n{text}"), prompts_reply(good[1])

    state = {"fail_last_group": True}
    last = (TASK.target.phrase(0), TASK.protected.phrase(0))  # not_smiling_female, the task's last group

    def reply(body):
        target, protected = ask(body)
        first, second = leaky(target, protected)
        if len(body["messages"]) == 2:  # the first round of a group
            return first
        if state["fail_last_group"] and (target, protected) == last:
            return fail(413, f"no more for key {KEY}")  # a fatal error in round 2: the run stops half-way
        return second

    out = tmp_path / "prompts" / "smiling_male.yaml"
    with ScriptedServer(reply) as server:
        result = invoke("--base-url", server.base_url, "--per-group", "2", "--out", str(out))
        assert result.exit_code == 1
        assert error_line(result) == f"Error: request to {server.base_url} failed: HTTP 413: no more for key ***"
        left = files(tmp_path)
        assert sorted(left) == ["prompts/smiling_male.yaml.partial.yaml"]  # the prompts so far, kept
        assert all(KEY.encode() not in data for data in left.values())
        # What went back to the server: the reply with the key redacted, and the rejection reason.
        follow_ups = [r["body"]["messages"] for r in server.requests if len(r["body"]["messages"]) > 2]
        assert follow_ups and all(KEY not in json.dumps(m) for m in follow_ups)
        assert chat.REDACTED in follow_ups[0][2]["content"]
        assert f"{chat.MSG_KEY_IN_PROMPT}" in follow_ups[0][3]["content"]

        state.update(fail_last_group=False)  # the rerun (same server: same options) continues
        result = invoke("--base-url", server.base_url, "--per-group", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    written = files(tmp_path)
    assert sorted(written) == ["prompts/smiling_male.config.yaml", "prompts/smiling_male.yaml"]
    assert all(KEY.encode() not in data and chat.REDACTED.encode() not in data for data in written.values())
    pf = load_prompt_file(out)
    for group in TASK.groups:
        assert len(pf.groups[group.name]) == 2
        assert all(check_prompt(p, TASK, group) is None for p in pf.groups[group.name])
    assert KEY not in result.output


def test_a_partial_file_holding_the_key_is_not_resumed_from(tmp_path):
    """Prompts saved by an older version that did not scrub are dropped on resume, never copied on."""
    out = tmp_path / "p.yaml"
    good = "Portrait face photo of a smiling man with curly hair."

    def reply(body):
        target, protected = ask(body)
        return prompts_reply(f"Portrait face photo of a {target} {protected} with glasses.")

    with ScriptedServer(reply) as server:
        writer = openai_writer.OpenAIWriter(model="test-model", base_url=server.base_url, mode="free")
        made_by = {**writer.describe(), "seed": 0, "per_group": 1}
        partial_path(out).write_text(json.dumps({"task": "smiling_male", "made_by": made_by,
                                                 "groups": {"smiling_male": [f"{good} {KEY}"]}}))
        result = invoke("--base-url", server.base_url, "--per-group", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 4  # smiling_male asked again
    assert sorted(files(tmp_path)) == ["p.config.yaml", "p.yaml"]
    assert KEY not in out.read_text()


def test_the_stage_refuses_a_writer_that_returns_its_key(tmp_path):
    """Defence in depth for writers other than ours: the stage checks the writer's own scrub() once more."""
    from aimfair_cli.core.errors import PromptWriterError
    from aimfair_cli.stages.prompts import MSG_WRITER_SECRET, write_prompts

    class Leaky:
        name = "leaky"

        def write(self, task, group, n, *, seed=0, existing=(), on_partial=None):
            return [f"Portrait face photo of a {task.target.phrase(group.target)} "
                    f"{task.protected.phrase(group.protected)} with {KEY}."]

        def scrub(self, text):
            return text.replace(KEY, chat.REDACTED)

        def describe(self):
            return {"writer": self.name}

    with pytest.raises(PromptWriterError) as err:
        write_prompts(task="smiling_male", out=tmp_path / "p.yaml", per_group=1, writer=Leaky())
    assert str(err.value) == MSG_WRITER_SECRET.format(writer="leaky", group="smiling_male")
    assert files(tmp_path) == {}


# ---- timeouts -----------------------------------------------------------------------------------------------


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (a hung LLM server)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_a_server_that_never_answers_ends_the_command_in_bounded_time(tmp_path):
    with SilentServer() as server:
        start = time.monotonic()
        result = invoke("--base-url", server.base_url, "--timeout", "1", "--out", "p.yaml")
        elapsed = time.monotonic() - start
    assert result.exit_code == 1
    assert error_line(result) == (f"Error: no reply from {server.base_url} within 1 s (2 attempts); "
                                  "raise --timeout if the model is slow")
    assert len(server.accepted) == 8  # the four groups side by side, each: one try and one retry, no more
    assert 2 <= elapsed < 8, elapsed  # two 1-s timeouts and at most 1 s of backoff, plus start-up
    assert files(tmp_path) == {}


def test_timeout_default_and_bounds(tmp_path):
    assert openai_writer.OpenAIWriter(model="m", base_url="http://127.0.0.1:9/v1").timeout == 60.0
    for value, why in (("0", "must be greater than 0, got 0.0"), ("-1", "must be greater than 0, got -1.0"),
                       ("nan", "must be a finite number, got nan"), ("inf", "must be a finite number, got inf")):
        result = invoke("--base-url", "http://127.0.0.1:9/v1", "--timeout", value, "--out", "p.yaml")
        assert result.exit_code == 1
        assert error_line(result) == f"Error: --timeout: {why}"
    with pytest.raises(UsageError) as err:  # library callers get the writer's own check
        openai_writer.OpenAIWriter(model="m", base_url="http://127.0.0.1:9/v1", timeout=0)
    assert str(err.value) == openai_writer.MSG_BAD_TIMEOUT.format(value=0)
    with pytest.raises(UsageError, match=r"^max_retries must be at least 0, got -1$"):
        openai_writer.OpenAIWriter(model="m", base_url="http://127.0.0.1:9/v1", max_retries=-1)
    result = runner.invoke(app, ["prompts", "--task", "smiling_male", "--timeout", "5", "--out", "p.yaml"])
    assert result.exit_code == 1
    assert error_line(result) == "Error: option --timeout applies to --writer openai or transformers only"
    assert files(tmp_path) == {}
