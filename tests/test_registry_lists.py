"""Lists of registered names are made from their registries, or checked against them here: the studies
(`experiments/catalogue.py` STUDIES), the tensor-selection strategies (`masking/strategies.py` REGISTRY), the
comparison methods (`methods` METHODS), the generators (`generators/base.py` GENERATORS), the prompt writers
(`writers/base.py` WRITERS) and the tasks (`core/tasks.py` TASKS), wherever a help text, a docstring, the README
or a docs page names them."""

import dataclasses
import re
from pathlib import Path

import pytest

import aimfair_cli.generators.base as generators_base
import aimfair_cli.methods as methods_package
import aimfair_cli.writers.base as writers_base
from aimfair_cli.core.options import spec_of
from aimfair_cli.core.tasks import TASKS
from aimfair_cli.experiments import catalogue
from aimfair_cli.experiments.catalogue import STUDIES
from aimfair_cli.experiments.demo import DemoConfig
from aimfair_cli.experiments.study import StudyConfig
from aimfair_cli.generators.base import GENERATORS
from aimfair_cli.masking import strategies
from aimfair_cli.methods import METHODS
from aimfair_cli.stages.finetune import FinetuneConfig
from aimfair_cli.stages.prompts import MSG_NO_TASK, PromptsConfig
from aimfair_cli.stages.synth import SynthConfig
from aimfair_cli.writers.base import WRITERS

ROOT = Path(__file__).resolve().parents[1]


def help_of(cls: type, name: str) -> str:
    return spec_of(next(f for f in dataclasses.fields(cls) if f.name == name)).help


def listed(text: str) -> list[str]:
    """The names a help text lists as "name (what it is)": each word just before a "(" outside parentheses."""
    names, depth = [], 0
    for m in re.finditer(r"([\w-]+) \(|[()]", text):
        if m.group(1) and depth == 0:
            names.append(m.group(1))
        depth += 1 if m.group(0).endswith("(") else -1
    return names


def table_names(doc: str) -> list[str]:
    """The names a docstring lists as an indented table: "    name    what it is", "    name:ARG  ..."."""
    return [m.group(1) for m in re.finditer(r"^    ([a-z][\w-]*)(?::\w+)? {2,}\S", doc, re.MULTILINE)]


def test_the_helpers():
    assert listed("a (x (y)), b-c (z) or d (w); all (every one)") == ["a", "b-c", "d", "all"]
    doc = "Intro.\n\n    main        one\n    random:R   two\n                more\n"
    assert table_names(doc) == ["main", "random"]


def test_the_study_helps_are_the_catalogue():
    assert listed(help_of(DemoConfig, "study").split(";")[0]) == list(STUDIES)
    run_folder = help_of(StudyConfig, "study")
    assert run_folder.split(";")[0].split(": ")[1].split(", ") == [s.name for s in STUDIES.values()
                                                                   if not s.offline_only]
    for text in (help_of(DemoConfig, "study"), run_folder):  # what `all` leaves out
        assert all(s.name in text.split(";")[1] for s in STUDIES.values() if not s.in_all)


def test_the_catalogue_docstring_lists_every_study():
    assert table_names(catalogue.__doc__) == list(STUDIES)


def test_the_strategies_docstring_and_help_are_the_registry():
    assert table_names(strategies.__doc__) == list(strategies.REGISTRY)
    text = help_of(FinetuneConfig, "strategy")
    assert all(f"{e.form}:" in text for e in strategies.REGISTRY.values())


def test_the_methods_docstring_is_the_registry():
    assert table_names(methods_package.__doc__) == list(METHODS)


@pytest.mark.parametrize("registry,module,config,field", [
    (GENERATORS, generators_base, SynthConfig, "generator"),
    (WRITERS, writers_base, PromptsConfig, "writer"),
], ids=["generators", "writers"])
def test_generator_and_writer_lists_are_their_registries(registry, module, config, field):
    assert sorted(listed(help_of(config, field))) == sorted(registry)
    first_paragraph = module.__doc__.split("\n\n")[0]
    assert sorted(re.findall(r"`([\w-]+)`", first_paragraph)) == sorted(registry)


def test_the_missing_task_message_names_every_task():
    assert re.findall(r"\w+", MSG_NO_TASK.split("(")[1]) == [*list(TASKS)[:-1], "or", list(TASKS)[-1]]


def test_the_demo_tutorial_table_lists_the_studies_of_all():
    text = (ROOT / "docs" / "tutorials" / "demo.md").read_text(encoding="utf-8")
    assert re.findall(r"^\| `([\w-]+)`", text, re.MULTILINE) == [s.name for s in STUDIES.values() if s.in_all]


def test_the_method_page_lists_every_strategy():
    text = (ROOT / "docs" / "explanation" / "method.md").read_text(encoding="utf-8")
    section = text.split("## Baselines and controls")[1].split("\n## ")[0]
    named = set(re.findall(r"`(?:--strategy )?([\w:]+)`", section))
    assert {e.form for e in strategies.REGISTRY.values() if e.name != "mask"} <= named


REGISTRIES = {"study": set(STUDIES) | {"all"}, "strategy": set(strategies.REGISTRY), "method": set(METHODS),
              "generator": set(GENERATORS), "writer": set(WRITERS), "task": set(TASKS)}


def pages() -> list[Path]:
    docs = ROOT / "docs"
    skip = {docs / "reference" / "cli.md", docs / "changelog.md"}  # generated; a record of the past
    return [ROOT / "README.md", *(p for p in sorted(docs.rglob("*.md")) if p not in skip and "results" not in p.parts)]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_name_the_docs_pass_to_a_flag_is_registered(page):
    text = page.read_text(encoding="utf-8")
    unknown = []
    for flag, value in re.findall(r"--(study|strategy|method|generator|writer|task)[ =]([\w:.%,-]+)", text):
        for name in value.rstrip(",.").split(","):
            if not name.isupper() and name.split(":")[0] not in REGISTRIES[flag]:  # NAME: a placeholder
                unknown.append(f"--{flag} {name}")
    assert unknown == []
