"""Template prompts, the `prompts` stage and command, and the shipped prompt files."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core.errors import PromptWriterError, UsageError
from aimfair_cli.core.tasks import TASKS, check_prompt, find_prompt_file, load_prompt_file, shipped_prompt_dir
from aimfair_cli.render.vocabulary import load_vocabulary
from aimfair_cli.stages.prompts import MSG_PARTIAL_MISMATCH, partial_path, write_prompts
from aimfair_cli.writers.template import MSG_LLM_OPTION, TemplateWriter, plain_prompt

runner = CliRunner()
VOCAB = load_vocabulary()
ALL_GROUPS = [(t, g) for t in TASKS.values() for g in t.groups]


@pytest.fixture(scope="module")
def writer():
    return TemplateWriter()


def _details(prompt: str, task) -> list[str]:
    """Vocabulary attributes a prompt mentions besides the task's own."""
    own = {VOCAB.task_attributes[task.target.name], VOCAB.task_attributes[task.protected.name]}
    return [attr for _, attr, _ in VOCAB.matches(prompt) if attr not in own]


def test_plain_prompts_word_for_word():
    t = TASKS["smiling_male"]
    assert [plain_prompt(t, g) for g in t.groups] == [
        "Portrait face photo of a smiling male.",
        "Portrait face photo of a smiling female.",
        "Portrait face photo of a male who is not smiling.",
        "Portrait face photo of a female who is not smiling.",
    ]
    assert plain_prompt(TASKS["smiling_young"], TASKS["smiling_young"].group("smiling_old")) == (
        "Portrait face photo of a smiling old person."
    )
    assert plain_prompt(TASKS["young_male"], TASKS["young_male"].group("old_female")) == "Portrait face photo of an old female."
    assert plain_prompt(TASKS["female_white"], TASKS["female_white"].group("female_non_white")) == (
        "Portrait face photo of a non-white female."
    )
    for task, group in ALL_GROUPS:
        assert check_prompt(plain_prompt(task, group), task, group) is None


@pytest.mark.parametrize("task,group", ALL_GROUPS, ids=lambda x: getattr(x, "name", None))
def test_prompts_valid_distinct_with_head_pose(writer, task, group):
    prompts = writer.write(task, group, 50, seed=0)
    assert len(prompts) == 50
    assert len({p.lower() for p in prompts}) == 50
    for p in prompts:
        assert p.startswith("Portrait face photo of ") and p.endswith(".")
        assert check_prompt(p, task, group) is None, p
        parsed = VOCAB.parse(p)
        assert "head_pose" in parsed, p
        details = _details(p, task)
        assert 2 <= len(details) <= 3, (p, details)
        assert len(set(details)) == len(details), p  # never two values of one attribute
        assert details[-1] == "head_pose" or "head_pose" in details


def test_same_seed_same_prompts_other_seed_differs(writer):
    task = TASKS["smiling_male"]
    group = task.group("smiling_male")
    a = writer.write(task, group, 50, seed=0)
    assert TemplateWriter().write(task, group, 50, seed=0) == a
    assert writer.write(task, group, 50, seed=1) != a
    # Groups draw from their own streams: another group is not a relabelled copy.
    other = writer.write(task, task.group("not_smiling_male"), 50, seed=0)
    assert [p.replace("a male who is not smiling,", "a smiling male") for p in other] != a


def test_no_contradicting_details(writer):
    for task, group in ALL_GROUPS:
        for p in writer.write(task, group, 50, seed=0):
            parsed = VOCAB.parse(p)
            gender = parsed.get("gender")
            if gender == "female":
                assert "facial_hair" not in parsed, p
            if gender == "male":
                assert "lipstick" not in parsed, p
            if parsed.get("hair_style") == "bald":
                assert "hair_color" not in parsed, p
            if parsed.get("glasses") == "sunglasses":
                assert "eye_color" not in parsed, p
            if parsed.get("age") == "young":
                assert parsed.get("hair_color") != "gray", p
            if task.name == "female_white":
                assert "skin_tone" not in parsed, p
            if gender is None and parsed.get("facial_hair", "none") != "none":
                assert parsed.get("lipstick") != "yes", p


def test_details_are_varied(writer):
    task = TASKS["smiling_male"]
    prompts = writer.write(task, task.group("smiling_male"), 50, seed=0)
    attrs = {a for p in prompts for a in _details(p, task)}
    poses = {VOCAB.parse(p)["head_pose"] for p in prompts}
    assert len(attrs) >= 8
    assert poses == set(VOCAB.values("head_pose"))


def test_resume_continues_the_same_list(writer):
    task = TASKS["young_male"]
    group = task.group("old_female")
    full = writer.write(task, group, 50, seed=3)
    seen = []
    resumed = writer.write(task, group, 50, seed=3, existing=full[:17], on_partial=seen.append)
    assert resumed == full
    assert seen and seen[-1] == full
    # Existing prompts are kept even when they are not the writer's own.
    mine = "Portrait face photo of an old female with a hat, looking up."
    assert writer.write(task, group, 5, seed=3, existing=[mine])[0] == mine


def test_llm_only_options_rejected():
    with pytest.raises(UsageError) as exc:
        TemplateWriter(base_url="http://localhost:8000/v1")
    assert str(exc.value) == MSG_LLM_OPTION.format(flag="base-url")
    assert str(exc.value) == "option --base-url applies to --writer openai or transformers only"


TINY_VOCABULARY = """
attributes:
  smiling: {"yes": [smiling], "no": [not smiling]}
  gender: {male: [male], female: [female]}
  glasses: {"yes": [glasses]}
  hat: {"yes": [hat]}
  head_pose: {left: [head turned left]}
details: [glasses, hat]
task_attributes: {Smiling: smiling, Male: gender}
"""


def test_too_many_prompts_is_a_clear_error(tmp_path):
    path = tmp_path / "vocabulary.yaml"
    path.write_text(TINY_VOCABULARY)
    writer = TemplateWriter(vocabulary=path)
    task = TASKS["smiling_male"]
    group = task.group("smiling_male")
    # glasses, a hat, or both (in either order), each with the one head pose: 4 distinct prompts at most.
    assert len(writer.write(task, group, 4, seed=0)) == 4
    with pytest.raises(PromptWriterError) as exc:
        writer.write(task, group, 10, seed=0)
    assert str(exc.value) == "template writer could make only 4 distinct prompts of 10 for group smiling_male"


# ---- the stage ---------------------------------------------------------------------------------------


def test_write_prompts_file(tmp_path):
    out = tmp_path / "p" / "smiling_male.yaml"
    pf = write_prompts(task="smiling_male", out=out, per_group=7, seed=2)
    loaded = load_prompt_file(out)
    assert loaded.groups == pf.groups
    assert list(loaded.groups) == [g.name for g in TASKS["smiling_male"].groups]
    assert all(len(v) == 7 for v in loaded.groups.values())
    assert loaded.plain["not_smiling_female"] == "Portrait face photo of a female who is not smiling."
    assert loaded.made_by == {"writer": "template", "vocabulary": VOCAB.sha256, "seed": 2, "per_group": 7}
    assert not partial_path(out).exists()
    config = yaml.safe_load((tmp_path / "p" / "smiling_male.config.yaml").read_text())
    assert config["prompts"]["per_group"] == 7 and config["prompts"]["writer"] == "template"


def test_template_diversity_is_measured_printed_and_written(tmp_path):
    """The template writer's prompt file carries the same diversity figures as an LLM writer's, and the command
    prints them on stderr (stdout keeps its one result line)."""
    from aimfair_cli.writers.diversity import bigram_ratio, near_key

    out = tmp_path / "d.yaml"
    result = runner.invoke(app, ["prompts", "--task", "smiling_male", "--per-group", "40", "--seed", "5", "--out",
                                 str(out)])
    assert result.exit_code == 0, result.output
    pf = load_prompt_file(out)
    for group, prompts in pf.groups.items():
        figures = pf.diversity[group]
        assert figures["prompts"] == figures["distinct_contexts"] == len({near_key(p) for p in prompts}) == 40
        assert figures["distinct_bigram_ratio"] == bigram_ratio(prompts) and 0 < bigram_ratio(prompts) < 1
        assert all(isinstance(k, int) and k > 0 for k in figures["rejected"].values())
        line = (f"{group}: 40 prompts, 40 distinct contexts, distinct-bigram ratio "
                f"{figures['distinct_bigram_ratio']:.2f}; rejected: ")
        assert line in result.stderr and line not in result.stdout
    # many prompts from a small vocabulary: candidates repeat, and are counted as rejected by reason
    w = TemplateWriter()
    task = TASKS["smiling_male"]
    w.write(task, task.group("smiling_male"), 400)
    counted = w.rejections["smiling_male"]
    assert counted["duplicate"] > 0 and set(counted) <= {"duplicate", "near-duplicate", "details that contradict each other"}


class _Flaky:
    """A template writer that is interrupted while writing its `fail_at`-th group."""

    name = "template"

    def __init__(self, fail_at: int) -> None:
        self.inner, self.calls, self.fail_at, self.existing = TemplateWriter(), 0, fail_at, []

    def describe(self):
        return self.inner.describe()

    def write(self, task, group, n, *, seed=0, existing=(), on_partial=None):
        self.calls += 1
        self.existing.append(list(existing))
        if self.calls == self.fail_at:
            on_partial(self.inner.write(task, group, n // 2, seed=seed))  # half of this group arrived
            raise KeyboardInterrupt
        return self.inner.write(task, group, n, seed=seed, existing=existing, on_partial=on_partial)


def test_interrupted_run_resumes_from_partial_file(tmp_path):
    out = tmp_path / "smiling_male.yaml"
    with pytest.raises(KeyboardInterrupt):
        write_prompts(task="smiling_male", out=out, per_group=10, writer=_Flaky(fail_at=3))
    assert not out.exists()
    saved = yaml.safe_load(partial_path(out).read_text())["groups"]
    assert [len(v) for v in saved.values()] == [10, 10, 5]

    second = _Flaky(fail_at=99)
    pf = write_prompts(task="smiling_male", out=out, per_group=10, writer=second)
    assert [len(e) for e in second.existing] == [10, 10, 5, 0]
    clean = write_prompts(task="smiling_male", out=tmp_path / "clean.yaml", per_group=10)
    assert pf.groups == clean.groups
    assert not partial_path(out).exists()


def test_partial_from_other_options_is_refused(tmp_path):
    out = tmp_path / "t.yaml"
    with pytest.raises(KeyboardInterrupt):
        write_prompts(task="smiling_male", out=out, per_group=4, writer=_Flaky(fail_at=1), seed=0)
    with pytest.raises(UsageError) as exc:
        write_prompts(task="smiling_male", out=out, per_group=4, seed=1)
    assert str(exc.value) == MSG_PARTIAL_MISMATCH.format(path=partial_path(out), what="seed")


def test_secrets_never_written(tmp_path):
    class Leaky(TemplateWriter):
        def describe(self):
            return {**super().describe(), "api_key": "sk-very-secret", "api_key_env": "MY_KEY"}

    out = tmp_path / "s.yaml"
    write_prompts(task="smiling_male", out=out, per_group=2, writer=Leaky())
    text = out.read_text()
    assert "sk-very-secret" not in text and "MY_KEY" in text


def test_subset_of_groups_keeps_the_others(tmp_path):
    out = tmp_path / "s.yaml"
    write_prompts(task="smiling_male", out=out, per_group=3, seed=0)
    before = load_prompt_file(out).groups
    write_prompts(task="smiling_male", out=out, per_group=4, seed=5, groups=["smiling_female"])
    after = load_prompt_file(out).groups
    assert len(after["smiling_female"]) == 4
    assert {k: v for k, v in after.items() if k != "smiling_female"} == {
        k: v for k, v in before.items() if k != "smiling_female"}


# ---- the command and the shipped files ---------------------------------------------------------------


def test_cli_writes_file(tmp_path):
    out = tmp_path / "x.yaml"
    result = runner.invoke(app, ["prompts", "--task", "young_male", "--per-group", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote 12 prompts (4 groups, writer template, seed 0) -> {out}\n"
    assert load_prompt_file(out).task.name == "young_male"


def test_cli_default_out_in_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["prompts", "--task", "smiling_young", "--per-group", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "prompts" / "smiling_young.yaml").is_file()
    assert find_prompt_file("smiling_young") == tmp_path / "prompts" / "smiling_young.yaml"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--per-group", "2"], "Error: --task is required (smiling_male, smiling_young, young_male or female_white)\n"),
        (["--task", "smiling_male", "--model", "gpt-4o"],
         "Error: option --model applies to --writer openai or transformers only\n"),
        (["--task", "smiling_male", "--temperature", "0.7"],
         "Error: option --temperature applies to --writer openai or transformers only\n"),
        (["--task", "nope"],
         "Error: --task: must be one of smiling_male, smiling_young, young_male, female_white, got 'nope'\n"),
        (["--task", "smiling_male", "--writer", "bard"],
         "Error: unknown prompt writer 'bard' (known: template, openai, transformers)\n"),
        (["--task", "smiling_male", "--per-group", "0"], "Error: --per-group: must be at least 1, got 0\n"),
    ],
)
def test_cli_errors(tmp_path, args, message):
    result = runner.invoke(app, ["prompts", *args, "--out", str(tmp_path / "e.yaml")])
    assert result.exit_code == 1
    assert result.stderr == message
    assert not (tmp_path / "e.yaml").exists()


@pytest.mark.parametrize("task", list(TASKS))
def test_shipped_files_match_the_command(tmp_path, task):
    """prompts/<task>.yaml is exactly what `aimfair prompts --task T --per-group 50 --writer template --seed 0`
    writes. If this fails after a vocabulary change, regenerate them (see the README)."""
    out = tmp_path / f"{task}.yaml"
    args = ["prompts", "--task", task, "--per-group", "50", "--writer", "template", "--seed", "0", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    shipped = shipped_prompt_dir() / f"{task}.yaml"
    assert shipped.read_text() == out.read_text(), f"regenerate {shipped}"
    pf = load_prompt_file(shipped)
    assert pf.task == TASKS[task]
    assert all(len(v) == 50 for v in pf.groups.values()) and len(pf.groups) == 4
    assert set(pf.plain) == {g.name for g in TASKS[task].groups}


def test_help_explains_every_option():
    result = runner.invoke(app, ["prompts", "--help"])
    assert result.exit_code == 0
    for flag in ("--task", "--per-group", "--writer", "--seed", "--out", "--model", "--base-url", "--api-key-env",
                 "--temperature", "--max-rounds", "--max-new-tokens", "--concurrency", "--mode", "--json", "--config"):
        assert flag in result.stdout
    assert "[default: OPENAI_API_KEY]" in " ".join(result.stdout.split())
