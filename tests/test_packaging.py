"""The wheel ships every package: pyproject's explicit list names each one on disk.

A package missing from `[tool.setuptools] packages` is absent from a non-editable
install (`pip install .`, the Dockerfile in docs/deploy.md), and `import zmesh` fails
there while every test run from a checkout passes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def packages_on_disk() -> set[str]:
    found = {"zmesh.cli"}  # cli/ ships as zmesh.cli (package-dir mapping)
    for init in (ROOT / "zmesh").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    found |= {
        "zmesh.cli." + ".".join(init.parent.relative_to(ROOT / "cli").parts)
        for init in (ROOT / "cli").rglob("*/__init__.py")
    }
    return found


def test_pyproject_lists_every_package_under_zmesh_and_cli() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert packages_on_disk() - listed == set()
    assert listed - packages_on_disk() == set()
