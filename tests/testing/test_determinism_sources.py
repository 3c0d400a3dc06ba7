"""The simulation replays a run bit for bit only if node code reads time and randomness
through its `Environment` (`node.env.wall_time()`, `random()`, `token_bytes()`) and its
event loop's clock. This scans the library for any other source of either, so a new one
is caught here rather than as a seed that no longer replays."""

from __future__ import annotations

import ast
from pathlib import Path

ZMESH = Path(__file__).resolve().parents[2] / "zmesh"

#: Modules that stand outside the simulated layers, and why they may read the real world.
OUTSIDE = {
    "runtime/environment.py": "the real Environment itself",
    "runtime/transport.py": "ZeroMQ sockets (the simulation swaps in its own transport)",
    "runtime/cookie.py": "makes the cookie file once, before any node runs",
    "discovery/gossip.py": "UDP gossip (not simulated: real datagrams, real clocks)",
}
#: Single findings allowed inside the simulated layers, and why they stay deterministic.
ALLOWED = {
    ("runtime/gen_server.py", "import time"): (
        "time.monotonic read only on a plain asyncio loop, whose loop.time() returns it;"
        " any other loop (uvloop, the simulation's virtual time) is read via loop.time"
    ),
}
MODULES = {"time", "random", "secrets", "uuid", "datetime"}
CALLS = {("os", "urandom"), ("os", "getrandom")}


def sources_of_nondeterminism(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in MODULES:
            found.append(f"from {node.module} import ...")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in CALLS
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_node_code_takes_time_and_randomness_only_from_its_environment() -> None:
    offenders = {}
    for path in sorted(ZMESH.rglob("*.py")):
        rel = path.relative_to(ZMESH).as_posix()
        if rel in OUTSIDE or rel.startswith("testing/"):
            continue
        found = [
            f
            for f in sources_of_nondeterminism(ast.parse(path.read_text(), rel))
            if (rel, f) not in ALLOWED
        ]
        if found:
            offenders[rel] = found
    assert offenders == {}, (
        "read time and randomness through node.env / the loop clock, or list the module "
        f"in OUTSIDE with the reason it stands outside the simulation: {offenders}"
    )


def test_the_scan_finds_each_kind_of_source() -> None:
    code = "import time\nfrom random import random\nimport os\nos.urandom(8)\nimport uuid"
    assert sources_of_nondeterminism(ast.parse(code)) == [
        "import time",
        "from random import ...",
        "import uuid",
        "os.urandom",
    ]


def test_every_module_listed_outside_exists() -> None:
    assert all((ZMESH / rel).exists() for rel in OUTSIDE)


def test_every_allowed_finding_is_still_there() -> None:
    for rel, finding in ALLOWED:
        assert finding in sources_of_nondeterminism(ast.parse((ZMESH / rel).read_text())), rel
