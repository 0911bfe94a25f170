"""The installed package must hold every module of the source tree: pyproject.toml lists packages explicitly
(prompts/ is mapped into the package), so a new subpackage that is not listed would be missing from a
non-editable install while every test of the checkout still passed."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "aimfair_cli").rglob("__init__.py")}
    listed = set(setuptools["packages"])
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert setuptools["package-dir"]["aimfair_cli.prompts"] == "prompts"
    assert "*.yaml" in setuptools["package-data"]["aimfair_cli.prompts"]
