"""The shape of the library: no import loop anywhere in aimfair_cli (function-level imports included), and the
dataset importers (`aimfair_cli.data`) used only by the commands that run them."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aimfair_cli"
# `aimfair demo` runs `data demo` as its first step, as it runs every other stage, through the study pipeline
DATA_USERS = ("aimfair_cli.cli.", "aimfair_cli.data.", "aimfair_cli.experiments.demo",
              "aimfair_cli.experiments.pipeline", "aimfair_cli.experiments.catalogue")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """aimfair_cli modules `path` imports anywhere in its body (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("aimfair_cli")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if not base.startswith("aimfair_cli"):
                continue
            for alias in node.names:  # `from . import dist` imports the module aimfair_cli.core.dist
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # importing a package's module also runs the package's __init__; leave those edges out (they are empty files)
    return {name: {m for m in imports_of(name, path, known) if not name.startswith(m + ".")}
            for name, path in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_loop():
    g = graph()
    # the graph sees function-level imports
    assert "aimfair_cli.training.checkpoint" in g["aimfair_cli.stages.pretrain"]
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_data_commands_import_the_importers():
    offenders = {name: sorted(m for m in deps if m.startswith("aimfair_cli.data"))
                 for name, deps in graph().items() if not name.startswith(DATA_USERS)}
    assert {k: v for k, v in offenders.items() if v} == {}
