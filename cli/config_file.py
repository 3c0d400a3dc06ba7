"""`zmesh join --config FILE`: the join options as TOML (stdlib tomllib).

    name = "a"
    listen = "tcp://0.0.0.0:7000"
    advertise = "tcp://10.0.0.5:7000"
    discover = ["dns:zmesh.default.svc.cluster.local:7000"]
    seed = []
    load = ["myapp.services"]
    app = "myapp:start"
    cookie = "..."            # better: $ZMESH_COOKIE or ~/.zmesh.cookie
    [node]                    # any zmesh.NodeConfig field
    tick = 0.4

Flags given on the command line win over the file (a repeated flag replaces the
file's list). An unknown key or a value of the wrong type exits 2, naming it.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from typing import Any

import zmesh

from .common import fail

STRINGS = ("name", "listen", "advertise", "app", "cookie")
LISTS = ("discover", "seed", "load")


def read_config(path: str) -> dict[str, Any]:
    """The checked contents of the TOML file at `path`; exits 2 on any problem."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        fail(f"--config {path}: {exc}")
    node_fields = {f.name for f in fields(zmesh.NodeConfig)}
    for key, value in data.items():
        if key in STRINGS:
            ok = isinstance(value, str)
        elif key in LISTS:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif key == "node":
            ok = isinstance(value, dict)
            unknown = sorted(set(value) - node_fields) if ok else []
            if unknown:
                fail(f"--config {path}: unknown [node] keys {unknown}; NodeConfig has "
                     f"{sorted(node_fields)}")  # fmt: skip
        else:
            fail(f"--config {path}: unknown key {key!r}; expected one of "
                 f"{sorted((*STRINGS, *LISTS, 'node'))}")  # fmt: skip
        if not ok:
            fail(f"--config {path}: {key!r} has the wrong type ({type(value).__name__})")
    return data
