"""No function of the library is longer than 80 lines (from its `def` to its last line, docstring included): a
long stage reads as named phases (`run_mask`: the sets, the gradient passes, the scores, the mask file), the way
`fit` is `train_one_epoch` and `predict` per epoch."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aimfair_cli"
MOST_LINES = 80


def long_functions(root: Path, most: int) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > most:
                    found.append(f"{path.relative_to(root.parent)}::{node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_80_lines():
    assert long_functions(PACKAGE, MOST_LINES) == []


def test_the_scan_finds_a_long_function(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n" + "    x = 1\n" * 80 + "\n\ndef g():\n    pass\n")
    assert long_functions(tmp_path, MOST_LINES) == [f"{tmp_path.name}/m.py::f (81 lines)"]
