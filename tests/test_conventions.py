"""What users of command-line tools expect: completion, --version, --verbose and --log-file everywhere."""

import os
import subprocess
import sys

import pytest
import typer

from aimfair_cli.cli.app import app


def root_context():  # Typer vendors its own Click: take the Context class it uses
    return typer.main.get_command(app).make_context("aimfair", ["--help"], resilient_parsing=True)


def _commands():
    root = typer.main.get_command(app)
    out = []
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):  # a group (`data`)
            out += [(f"{name} {sub}", c) for sub, c in cmd.commands.items()]
        else:
            out.append((name, cmd))
    return out


@pytest.mark.parametrize("name,cmd", _commands(), ids=[n for n, _ in _commands()])
def test_every_command_has_verbose_and_log_file(name, cmd):
    flags = {opt for p in cmd.params for opt in p.opts}
    assert {"--verbose", "-v", "--log-file", "--config"} <= flags, name
    ctx = type(root_context())(cmd)
    for p in cmd.params:  # metavars name what is expected, never a Python type
        record = p.get_help_record(ctx)
        if record and getattr(p, "param_type_name", "") == "option":
            assert "list[" not in record[0] and "<" not in record[0], (name, record[0])

def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "aimfair_cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_version_through_python_m():
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("aimfair ")


def test_completion_script_and_completions():
    script = _run("--show-completion", "bash")
    assert script.returncode == 0 and "_aimfair_completion" in script.stdout and "_AIMFAIR_COMPLETE" in script.stdout
    # what the shell calls on <TAB>: the commands starting with "pre", the options of pretrain starting with --re
    words = _run(env={"_AIMFAIR_COMPLETE": "complete_bash", "COMP_WORDS": "aimfair pre", "COMP_CWORD": "1"})
    assert words.stdout.split() == ["pretrain"]
    flags = _run(env={"_AIMFAIR_COMPLETE": "complete_bash", "COMP_WORDS": "aimfair pretrain --re", "COMP_CWORD": "2"})
    assert "--resume" in flags.stdout.split()
