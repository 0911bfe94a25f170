"""The options layer: one dataclass per command gives flags, --help defaults, config-file sections and validation."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core import config, options
from aimfair_cli.core.errors import ConfigError, UsageError
from aimfair_cli.core.options import show_default
from aimfair_cli.masking.selection import MSG_TOPK_TOO_LARGE, parse_topk
from aimfair_cli.stages.pretrain import PretrainConfig

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})


def _commands():
    """(argv prefix, callback) for every leaf command of the app."""
    import typer.main

    group = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            out.append((path, cmd))

    walk(group, [])
    return out


COMMANDS = _commands()


def _options_class(cmd):
    cb = cmd.callback
    while cb is not None and not hasattr(cb, "options_class"):
        cb = getattr(cb, "__wrapped__", None)
    assert cb is not None, "command not declared with cli.options.command"
    return cb.options_class, cb.section


def test_every_command_is_declared_by_an_options_dataclass():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert names == {"data celeba", "data utkface", "data demo", "data compose", "prompts", "synth", "pretrain", "mask",
                     "finetune", "eval", "demo", "study"}
    sections = {_options_class(cmd)[1] for _, cmd in COMMANDS}
    assert sections == set(config.SECTIONS)


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_states_the_dataclass_defaults(path, cmd):
    cls, _ = _options_class(cmd)
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # undo the help formatter's wrapping
    for f in dataclasses.fields(cls):
        spec = options.spec_of(f)
        assert spec.help, f"{cls.__name__}.{f.name} has no help"
        if spec.argument:
            assert f.name.upper() in text
            continue
        assert options.flag_name(f) in text
        shown = show_default(f)
        if shown is not None:
            assert f"[default: {' '.join(shown.split())}]" in text, (f.name, shown)


def test_demo_help_says_the_workers_default_it_uses():
    text = " ".join(runner.invoke(app, ["demo", "--help"]).output.split())
    assert "--workers INTEGER Data-loader worker processes. (0 <= x <= 256) [default: 0]" in text


BAD_FLAGS = [
    (["pretrain", "--lr", "nan"], "--lr: must be a finite number, got nan"),
    (["pretrain", "--lr", "inf"], "--lr: must be a finite number, got inf"),
    (["pretrain", "--lr", "0"], "--lr: must be greater than 0, got 0.0"),
    (["pretrain", "--crop-scale", "nan"], "--crop-scale: must be a finite number, got nan"),
    (["pretrain", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["pretrain", "--workers", "-1"], "--workers: must be at least 0, got -1"),
    (["pretrain", "--milestones", "3,5,,6"], "--milestones: an empty item in the comma-separated list '3,5,,6'"),
    (["pretrain", "--amp", "maybe"], "--amp: must be one of auto, on, off, got 'maybe'"),
    (["finetune", "--lr", "inf"], "--lr: must be a finite number, got inf"),
    (["finetune", "--bn", "thaw"], "--bn: must be one of update, freeze, got 'thaw'"),
    (["mask", "--n-synth", "-8"], "--n-synth: must be at least 4, got -8"),
    (["mask", "--score", "l2"], "--score: must be one of absdiff, cosine, got 'l2'"),
    (["prompts", "--task", "smiling_male", "--temperature", "nan"], "--temperature: must be a finite number, got nan"),
    (["prompts", "--task", "smiling_male", "--per-group", str(10**9)],
     "--per-group: must be at most 10_000, got 1000000000"),
    (["synth", "--group", "all", "--n", str(10**12)], "--n: must be at most 10_000_000, got 1000000000000"),
    (["synth", "--group", "all", "--n", "4", "--guidance", "nan"], "--guidance: must be a finite number, got nan"),
    (["data", "demo", "--size", "100000"], "--size: must be at most 1024, got 100000"),
    (["data", "demo", "--n-train", "0"], "--n-train: must be at least 4, got 0"),
    (["demo", "--seeds", "0"], "--seeds: must be at least 1, got 0"),
    (["demo", "--finetune-lr", "nan"], "--finetune-lr: must be a finite number, got nan"),
    (["demo", "--freeze-blocks", "layer1,layer9"],
     "--freeze-blocks: must be one of stem, layer1, layer2, layer3, layer4, fc, got 'layer9'"),
    (["eval", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
]


@pytest.mark.parametrize("argv,message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_values_are_one_line_errors_before_any_work(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    result = runner.invoke(app, argv)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == f"Error: {message}\n"
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert time.perf_counter() - started < 5  # refused before any work (no allocation, no training)


def test_click_parse_errors_keep_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["pretrain", "--epochs", "abc"])
    assert result.exit_code == 2
    assert "Invalid value for '--epochs'" in result.stderr


def _yaml(tmp_path, text, name="aimfair.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_values_are_converted_to_the_field_types(tmp_path):
    path = _yaml(tmp_path, "pretrain:\n  epochs: '2'\n  lr: 1e-3\n  amp: on\n  milestones: [3, 1]\n"
                           "  train: elsewhere/train.csv\n")
    cfg = config.resolve("pretrain", PretrainConfig, {}, config_file=path)
    assert (cfg.epochs, cfg.lr, cfg.amp, cfg.milestones) == (2, 0.001, "on", (3, 1))
    assert cfg.train == Path("elsewhere/train.csv")


def test_flags_win_over_the_file_which_wins_over_defaults(tmp_path):
    path = _yaml(tmp_path, "pretrain:\n  epochs: 3\n  lr: 0.5\n")
    cfg = config.resolve("pretrain", PretrainConfig, {"lr": 0.25, "batch_size": None}, config_file=path)
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (3, 0.25, PretrainConfig.batch_size)


@pytest.mark.parametrize("body,message", [
    ("pretrain:\n  epochs: two\n", "{path}: pretrain.epochs: expected a whole number, got 'two'"),
    ("pretrain:\n  epochs: 2.5\n", "{path}: pretrain.epochs: expected a whole number, got 2.5"),
    ("pretrain:\n  epochs: true\n", "{path}: pretrain.epochs: expected a whole number, got True"),
    ("pretrain:\n  lr: .nan\n", "{path}: pretrain.lr: must be a finite number, got nan"),
    ("pretrain:\n  lr: [1]\n", "{path}: pretrain.lr: expected a number, got [1]"),
    ("pretrain:\n  image_size: 100000\n", "{path}: pretrain.image_size: must be at most 4096, got 100000"),
    ("pretrain:\n  epoch: 2\n", "{path}: unknown key 'epoch' in section 'pretrain' (known: "
     + ", ".join(f.name for f in dataclasses.fields(PretrainConfig)) + ")"),
    ("pretrian:\n  epochs: 2\n", "{path}: unknown section 'pretrian' (known: " + ", ".join(config.SECTIONS) + ")"),
    ("- just\n- a list\n", "{path}: not a YAML mapping of command sections"),
    ("pretrain: {epochs: [\n", "{path}: invalid YAML (expected the node content, but found '<stream end>' at line 2, column 1)"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, monkeypatch, body, message):
    path = _yaml(tmp_path, body)
    monkeypatch.chdir(tmp_path)
    before = path.read_bytes()
    result = runner.invoke(app, ["pretrain"])
    assert result.exit_code == 1, result.output
    assert result.stderr == "Error: " + message.format(path="aimfair.yaml") + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aimfair.yaml"]
    assert path.read_bytes() == before


def test_explicit_config_file_must_exist(tmp_path):
    result = runner.invoke(app, ["pretrain", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert result.stderr == f"Error: config file not found: {tmp_path / 'nope.yaml'}\n"


def test_non_utf8_config_is_one_line_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"pretrain:\n  target_name: caf\xe9\n")
    result = runner.invoke(app, ["pretrain", "--config", str(path)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {path}: not UTF-8 text (save the file as UTF-8)\n"


def test_alias_bomb_is_refused_fast(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = _yaml(tmp_path, "pretrain:\n  " + "\n  ".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        config.load_config_file(path)
    assert time.perf_counter() - started < 1
    assert str(err.value) == config.MSG_ALIASES.format(path=path, limit=config.MAX_ALIASES)


def test_a_few_aliases_are_fine(tmp_path):
    path = _yaml(tmp_path, "pretrain:\n  epochs: &e 3\nmask:\n  seed: *e\n")
    assert config.load_config_file(path) == {"pretrain": {"epochs": 3}, "mask": {"seed": 3}}


def test_library_callers_are_validated_too():
    from aimfair_cli.stages.pretrain import run_pretrain

    with pytest.raises(UsageError, match=r"^--epochs: must be at least 1, got 0$"):
        run_pretrain(PretrainConfig(epochs=0))


def test_topk_larger_than_the_model_is_an_error():
    assert parse_topk("62", 62) == 62
    assert parse_topk("100%", 62) == 62
    with pytest.raises(UsageError) as err:
        parse_topk("63", 62)
    assert str(err.value) == MSG_TOPK_TOO_LARGE.format(k=63, total=62)


def test_resolved_config_is_the_dataclass(tmp_path):
    cfg = options.check(PretrainConfig(out=tmp_path / "m.safetensors", milestones="4,2"))
    path = config.write_resolved_config(cfg.out, "pretrain", cfg)
    saved = config.read_yaml(path)["pretrain"]
    assert list(saved) == [f.name for f in dataclasses.fields(PretrainConfig)]
    assert saved["milestones"] == [4, 2] and saved["out"] == os.fspath(tmp_path / "m.safetensors")
    # what was saved reads back through the same layer into the same options
    assert config.resolve("pretrain", PretrainConfig, {}, config_file=path) == cfg


def test_synth_flags_come_from_the_generators_own_options():
    import dataclasses
    import inspect

    from aimfair_cli.core.options import spec_of
    from aimfair_cli.generators.diffusion import DTYPES, SCHEDULERS, DiffusersGenerator, DiffusersOptions
    from aimfair_cli.generators.procedural import ProceduralGenerator, ProceduralOptions
    from aimfair_cli.stages.synth import GENERATOR_OPTIONS, SynthConfig

    declared = [f.name for cls in (ProceduralOptions, DiffusersOptions) for f in dataclasses.fields(cls)]
    assert list(GENERATOR_OPTIONS) == declared
    synth = {f.name: f for f in dataclasses.fields(SynthConfig)}
    assert all(synth[name].default is None for name in declared)  # passed on only when given
    assert spec_of(synth["scheduler"]).choices == tuple(SCHEDULERS) and spec_of(synth["dtype"]).choices == tuple(DTYPES)
    for gen, opts in ((DiffusersGenerator, DiffusersOptions), (ProceduralGenerator, ProceduralOptions)):
        params = inspect.signature(gen.__init__).parameters
        for f in dataclasses.fields(opts):  # the generator's defaults are its options' defaults
            assert params[f.name].default == f.default, (gen.__name__, f.name)
    text = " ".join(runner.invoke(app, ["synth", "--help"]).output.split())
    assert "Denoising steps. --generator diffusers only. (1 <= x <= 1000) [default: 25]" in text


def test_prompts_flags_come_from_the_writers_own_options():
    import dataclasses
    import inspect

    from aimfair_cli.stages.prompts import WRITER_OPTIONS, PromptsConfig
    from aimfair_cli.writers.openai_writer import OpenAIOptions, OpenAIWriter
    from aimfair_cli.writers.transformers_writer import TransformersOptions, TransformersWriter

    names = {f.name for cls in (OpenAIOptions, TransformersOptions) for f in dataclasses.fields(cls)}
    assert set(WRITER_OPTIONS) == names and len(WRITER_OPTIONS) == len(names)  # shared names give one flag
    assert all(f.default is None for f in dataclasses.fields(PromptsConfig) if f.name in names)
    for writer, opts in ((OpenAIWriter, OpenAIOptions), (TransformersWriter, TransformersOptions)):
        params = inspect.signature(writer.__init__).parameters
        for f in dataclasses.fields(opts):
            assert params[f.name].default == f.default, (writer.__name__, f.name)
    text = " ".join(runner.invoke(app, ["prompts", "--help"]).output.split())
    assert "[default: openai 1.0, transformers 0.7]" in text and "--max-new-tokens" in text
    assert "openai: tokens per reply at most, sent as max_tokens (for servers that otherwise generate up to their " \
           "context size); transformers: tokens generated per reply at most. LLM writers only. (1 <= x <= 1_000_000) " \
           "[default: openai the server's, transformers 80 per prompt (composed: 120 per context) asked + 32]" in text
    assert "openai: requests sent at once (one per group still missing prompts). LLM writers only. " \
           "(1 <= x <= 64) [default: 4]" in text
