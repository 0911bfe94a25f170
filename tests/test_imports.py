"""The shape of the library: every import runs down the layers of `LAYERS` (docs/architecture.md), there is no
import loop anywhere in aimfair_cli (function-level and type-checking imports included), and the dataset importers
(`aimfair_cli.data`) are used only by the commands that run them."""

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


# The layers, from the top: a module may import its own layer or any layer below, never one above (the
# architecture, drawn in docs/architecture.md). Each entry names packages (a prefix) or single modules.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the command line", ("aimfair_cli.__main__", "aimfair_cli.cli")),
    ("the drivers: demo, study, the study catalogue, the report", ("aimfair_cli.experiments",)),
    ("the stages and the dataset importers", ("aimfair_cli.stages", "aimfair_cli.data")),
    ("the method, the comparison methods, generators and prompt writers",
     ("aimfair_cli.masking", "aimfair_cli.methods", "aimfair_cli.generators", "aimfair_cli.writers")),
    ("training and the offline renderer", ("aimfair_cli.training", "aimfair_cli.render")),
    ("the fairness numbers", ("aimfair_cli.fairness",)),
    ("the core", ("aimfair_cli.core", "aimfair_cli")),
)


def layer_of(name: str) -> int | None:
    """The index of the layer `name` belongs to (0 is the top); the root package `aimfair_cli` only by itself."""
    best, depth = None, -1
    for i, (_, members) in enumerate(LAYERS):
        for m in members:
            hit = name == m or (m != "aimfair_cli" and name.startswith(m + "."))
            if hit and len(m) > depth:
                best, depth = i, len(m)
    return best


def upward_edges(g: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a)}: {LAYERS[layer_of(a)][0]}) imports {b} (layer {layer_of(b)}: "
                  f"{LAYERS[layer_of(b)][0]})" for a, deps in g.items() for b in deps if layer_of(b) < layer_of(a))


def test_every_module_has_a_layer():
    assert [name for name in graph() if layer_of(name) is None] == []


def test_every_import_runs_downward():
    assert upward_edges(graph()) == []


def test_the_layer_check_finds_an_upward_import():
    assert layer_of("aimfair_cli.core.errors") == layer_of("aimfair_cli") == len(LAYERS) - 1
    assert layer_of("aimfair_cli.cli.app") == 0
    edges = upward_edges({"aimfair_cli.core.errors": {"aimfair_cli.stages.mask"}, "aimfair_cli.stages.mask": set()})
    assert len(edges) == 1 and edges[0].startswith("aimfair_cli.core.errors (layer 6")
