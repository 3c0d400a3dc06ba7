"""Architecture guards: the pure core never imports asyncio or zmq; cli/ uses only the API."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_CORE = {"asyncio", "zmq", "zmesh.runtime", "zmesh.testing", "socket", "threading"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_pure_core_imports_neither_asyncio_nor_zmq() -> None:
    core = sorted((ROOT / "zmesh" / "core").glob("*.py"))
    assert core, "no core modules found"
    for path in [*core, ROOT / "zmesh" / "terms.py", ROOT / "zmesh" / "errors.py"]:
        bad = {
            name
            for name in imports_of(path)
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_CORE)
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_cli_imports_only_the_public_api() -> None:
    for path in sorted((ROOT / "cli").glob("*.py")):
        internal = {name for name in imports_of(path) if name.startswith("zmesh.") or name == "cli"}
        assert not internal, f"{path.relative_to(ROOT)} imports {sorted(internal)}"
