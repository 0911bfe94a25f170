"""The documentation agrees with the code: the generated CLI reference is current, every option the prose names
exists on the command it is named with, the documented config sections are the real ones, relative links and
anchors resolve, the README stays within its budget, and the Python examples run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core import config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_BUDGET = 12_000
GENERATED = {DOCS / "reference" / "cli.md"}  # checked against the app as a whole instead
REGENERATE = ".venv/bin/python scripts/gen_cli_reference.py"

# Options of other programs that the docs show beside aimfair's: torchrun's launcher and mkdocs.
EXTERNAL = {"--standalone", "--nproc_per_node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id",
            "--strict"}

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
# `aimfair data demo ...`, `... -m aimfair_cli -- synth ...`, `bash scripts/demo.sh ...`, `python benchmarks/x.py ...`
COMMAND = re.compile(r"(?:\baimfair(?!_)|-m aimfair_cli --)\s+(?P<cmd>data\s+[a-z]+|[a-z]+)(?P<rest>[^\n]*)"
                     r"|scripts/demo\.sh(?P<demo>[^\n]*)"
                     r"|(?P<script>(?:benchmarks|scripts)/[a-z_]+\.py)(?P<srest>[^\n]*)")
# a span that starts with a command name: `mask --topk 63`, `data demo --ambiguous`
BARE = re.compile(r"^(?P<cmd>data [a-z]+|[a-z]+) (?P<rest>-.*)$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose_files() -> list[Path]:
    pages = sorted(p for p in DOCS.rglob("*.md") if p not in GENERATED)
    return [README, *pages]


def command_options() -> dict[str, set[str]]:
    """Every command path ('', 'pretrain', 'data demo', ...) -> the option names its --help lists."""
    found: dict[str, set[str]] = {}

    def walk(cmd, path: list[str]) -> None:
        names = {"--help"}
        for param in cmd.params:
            names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("-"))
        found[" ".join(path)] = names
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return found


def script_options() -> dict[str, set[str]]:
    """Options of the benchmark and helper scripts, from their argparse declarations."""
    found = {}
    for path in [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py")]:
        text = path.read_text(encoding="utf-8")
        found[f"{path.parent.name}/{path.name}"] = {"--help", *re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", text)}
    return found


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def code_texts(text: str) -> list[str]:
    """Code blocks (continuation lines joined) and inline code spans."""
    blocks = [m.group(0).replace("\\\n", " ") for m in FENCE.finditer(text)]
    indented = [m.group(0) for m in re.finditer(r"(?:^(?: {4}|\t)[^\n]*\n?)+", without_code_blocks(text), re.M)]
    return blocks + indented + SPAN.findall(without_code_blocks(text))


def stop_at_shell(rest: str) -> str:
    """The arguments of one command: up to a comment, a pipe, `;`, `&&` or another command."""
    return re.split(r"\s#|\||;|&&|\baimfair\b|torchrun", rest)[0]


def mentions(text: str, commands: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(command, option) pairs for options written on an aimfair or script command line."""
    scripts = script_options()
    pairs = []
    for code in code_texts(text):
        for m in COMMAND.finditer(code):
            if m.group("demo") is not None:
                cmd, rest = "demo", m.group("demo")
            elif m.group("script"):
                cmd, rest = m.group("script"), m.group("srest")
            else:
                cmd, rest = " ".join(m.group("cmd").split()), m.group("rest")
                if cmd not in commands:  # "aimfair is ...", "aimfair data" alone
                    continue
            pairs += [(cmd, opt) for opt in OPTION.findall(stop_at_shell(rest))]
    for span in SPAN.findall(without_code_blocks(text)):
        m = BARE.match(span)
        if m and m.group("cmd") in commands:
            pairs += [(m.group("cmd"), opt) for opt in OPTION.findall(m.group("rest"))]
    return pairs


def test_cli_reference_is_generated_from_the_current_app():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", ROOT / "scripts" / "gen_cli_reference.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert committed == gen.render(), f"docs/reference/cli.md is stale: run {REGENERATE}"


def test_the_generated_reference_lists_every_command_and_option():
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    for cmd, names in command_options().items():
        heading = f"`aimfair {cmd}`".replace("aimfair `", "aimfair`") if cmd else "`aimfair`"
        assert re.search(rf"^#+ {re.escape(heading)}$", page, re.M), cmd
        for name in names - {"--help"}:
            assert name in page, (cmd, name)


def test_options_on_command_lines_exist_on_that_command():
    commands, scripts = command_options(), script_options()
    wrong, checked = [], 0
    for path in prose_files():
        for cmd, opt in mentions(path.read_text(encoding="utf-8"), commands):
            checked += 1
            known = scripts.get(cmd) if cmd.endswith(".py") else commands[cmd]
            if known is not None and opt not in known and opt not in EXTERNAL:
                wrong.append(f"{path.relative_to(ROOT)}: `{cmd} {opt}`")
    assert checked > 200  # the pattern does find the command lines
    assert not wrong, "options the command does not have:\n" + "\n".join(wrong)


def test_every_option_named_in_prose_exists():
    """An option named on its own (`--momentum`) must belong to a command named in the same paragraph, or, when
    the paragraph names none, to some command or script."""
    commands, scripts = command_options(), script_options()
    everything = set().union(*commands.values(), *scripts.values(), EXTERNAL)
    wrong = []
    for path in prose_files():
        for para in re.split(r"\n\s*\n", without_code_blocks(path.read_text(encoding="utf-8"))):
            named = {" ".join(c.split()) for c in re.findall(r"aimfair (data [a-z]+|[a-z]+)", para)} & set(commands)
            allowed = set().union(*(commands[c] for c in named), EXTERNAL) if named else everything
            for span in SPAN.findall(para):
                if COMMAND.search(span) or (BARE.match(span) and BARE.match(span).group("cmd") in commands):
                    continue  # a command line: checked against its own command above
                for opt in OPTION.findall(span):
                    if opt not in allowed and opt not in everything:
                        wrong.append(f"{path.relative_to(ROOT)}: {opt}")
                    elif opt not in allowed and not any(opt in commands[c] for c in named):
                        wrong.append(f"{path.relative_to(ROOT)}: {opt} (not an option of {', '.join(sorted(named))})")
    assert not wrong, "options named in the docs that do not exist there:\n" + "\n".join(sorted(set(wrong)))


def test_documented_config_sections_are_the_real_ones():
    page = (DOCS / "how-to" / "config-files.md").read_text(encoding="utf-8")
    table = page.split("<!-- config-sections:", 1)[1].split("\n\n", 2)[1]
    documented = re.findall(r"^\| `([a-z_]+)` \| `aimfair ([a-z ]+)` \|$", table, re.M)
    assert [s for s, _ in documented] == list(config.SECTIONS)
    for section, cmd in documented:
        assert cmd in command_options(), cmd
        assert cmd.replace(" ", "_") == section
    for path in prose_files():  # no other page lists the sections (and goes stale)
        text = path.read_text(encoding="utf-8")
        assert path.name == "config-files.md" or not re.search(r"sections? `data_celeba`, `data_utkface`", text), path


def slug(heading: str) -> str:
    """The id Python-Markdown's toc gives a heading (MkDocs' default)."""
    text = re.sub(r"`|\*\*?|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip()
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def github_slug(heading: str) -> str:
    text = re.sub(r"`|\*\*?", "", heading).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(path: Path) -> set[str]:
    text = without_code_blocks(path.read_text(encoding="utf-8"))
    heads = re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)
    make = github_slug if path == README else slug
    return {make(h) for h in heads}


def test_relative_links_and_anchors_resolve():
    broken = []
    for path in prose_files():
        for target in LINK.findall(without_code_blocks(path.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    assert pages and all(f": {p}" in nav for p in pages), [p for p in pages if f": {p}" not in nav]


def test_readme_stays_within_its_budget_and_links_the_paper():
    text = README.read_text(encoding="utf-8")
    assert len(text) <= README_BUDGET, f"README.md is {len(text)} characters; the budget is {README_BUDGET}"
    for needed in ("https://arxiv.org/abs/2503.05665", "https://github.com/zengqunzhao/AIM-Fair", "@inproceedings",
                   "bash scripts/demo.sh", "bash scripts/test.sh"):
        assert needed in text, needed


def test_eval_predictions_help_names_both_formats():
    result = CliRunner().invoke(app, ["eval", "--help"], terminal_width=200)
    assert result.exit_code == 0
    help_line = " ".join(result.output.split()).split("--predictions", 1)[1].split("--batch-size")[0]
    assert "CSV" in help_line and ".jsonl" in help_line, help_line


@pytest.mark.slow
def test_python_examples_in_the_docs_run(tmp_path, monkeypatch):
    """Each page's ```python blocks run in order, in one namespace, in an empty folder (tiny sizes: seconds)."""
    monkeypatch.chdir(tmp_path)
    ran = 0
    for path in sorted(DOCS.rglob("*.md")):
        blocks = re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)
        namespace: dict = {"__name__": "__docs__"}
        for i, block in enumerate(blocks):
            exec(compile(block, f"{path.relative_to(ROOT)} block {i + 1}", "exec"), namespace)  # noqa: S102
            ran += 1
    assert ran >= 4
    assert (tmp_path / "run" / "finetune.safetensors").exists()


def test_docs_build_strictly(tmp_path):
    """What .ci/run does: mkdocs build --strict (broken links and anchors fail). Skipped without the docs extra."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()
