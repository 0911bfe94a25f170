"""docs/errors.md is the authoritative list of refused inputs: every message it quotes is the code's message
template, word for word, and every refusal class issue 29 added is listed."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
ENTRY = re.compile(r'^\s*- `(aimfair_cli(?:\.\w+)+)\.(MSG_\w+)`: "(.*)"$')
REQUIRED = {
    "aimfair_cli.data.demo.MSG_BUSY",
    "aimfair_cli.core.fsio.MSG_SAME_AS_INPUT", "aimfair_cli.core.fsio.MSG_TWO_OUTPUTS",
    "aimfair_cli.cli.console.MSG_LOG_FILE", "aimfair_cli.cli.errors.MSG_STDOUT",
    "aimfair_cli.core.options.MSG_EMPTY_ITEM", "aimfair_cli.core.options.MSG_IS_DIR",
    "aimfair_cli.core.manifest.MSG_DUPLICATE", "aimfair_cli.core.manifest.MSG_CSV_FIELD",
    "aimfair_cli.core.manifest.MSG_NAME_TOO_LONG", "aimfair_cli.training.images.MSG_TOO_FEW_TO_TRAIN",
    "aimfair_cli.training.images.MSG_BATCH_OF_ONE", "aimfair_cli.masking.synthsets.MSG_MISSING_CELL",
    "aimfair_cli.training.loop.MSG_NON_FINITE_SCORES", "aimfair_cli.stages.mask.MSG_SCORES_NOT_FINITE",
    "aimfair_cli.training.resume.MSG_EPOCHS_DONE", "aimfair_cli.training.resume.MSG_NOT_FINITE_STATE",
    "aimfair_cli.masking.selection.MSG_TOPK_TOO_LARGE", "aimfair_cli.training.models.MSG_BAD_DEVICE",
    "aimfair_cli.writers.openai_writer.MSG_KEY_NOT_ASCII", "aimfair_cli.core.hub.MSG_PICKLE_ONLY",
}


def _entries() -> list[tuple[str, str, str]]:
    lines = (DOCS / "errors.md").read_text(encoding="utf-8").splitlines()
    return [m.groups() for m in map(ENTRY.match, lines) if m]


@pytest.mark.parametrize("module, name, text", _entries(), ids=lambda v: v if v.startswith("MSG_") else "")
def test_every_quoted_message_is_the_codes(module, name, text):
    assert getattr(importlib.import_module(module), name) == text


def test_every_refusal_class_is_listed():
    listed = {f"{m}.{n}" for m, n, _ in _entries()}
    assert REQUIRED <= listed, sorted(REQUIRED - listed)


def test_the_exit_code_rule_matches_the_code():
    from aimfair_cli.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE

    table = (DOCS / "exit-codes.md").read_text(encoding="utf-8")
    for code in (0, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED):
        assert re.search(rf"^\| {code} \|", table, re.M), code
