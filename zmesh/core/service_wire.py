"""The services layer's messages between nodes, pure: how each is written and read.

Every `svc.*` body a peer sends is read by one `parse_*` function here, which returns
plain values or raises ConfigError (a ValueError) naming what is wrong; the runtime's
request and cast dispatch counts such a refusal and carries on. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Any

from zmesh.core.registry_state import Stamp, check_name
from zmesh.core.service_table import ServiceSpec, check_spec, check_stamp
from zmesh.errors import ConfigError
from zmesh.terms import Pid

#: A moved instance's state as the takeover carries it: None when there is none (its
#: `handoff()` failed or it is a function), else the 1-tuple `(state,)`.
Restored = tuple[Any] | None


def _fail(what: str, body: object) -> ConfigError:
    return ConfigError(f"malformed {what}: {str(body)[:120]}")


def stamp_wire(stamp: Stamp) -> list[Any]:
    return [stamp.time, stamp.node, stamp.seq]


def parse_stamp(data: Any) -> Stamp:
    try:
        t, node, seq = data
        return check_stamp(Stamp(float(t), node, seq))
    except (TypeError, ValueError) as exc:
        raise _fail("stamp", data) from exc


def spec_wire(spec: ServiceSpec) -> list[Any]:
    return [
        spec.name, spec.server, spec.args, spec.restart, spec.quorum,
        spec.max_restarts, spec.max_seconds, *stamp_wire(spec.stamp),
    ]  # fmt: skip


def parse_spec(data: Any) -> ServiceSpec:
    try:
        name, server, args, restart, quorum, max_restarts, max_seconds, t, node, seq = data
    except (TypeError, ValueError) as exc:
        raise _fail("service spec", data) from exc
    if type(args) is not tuple or type(quorum) is not bool:
        raise _fail("service spec", data)
    stamp = parse_stamp([t, node, seq])
    return check_spec(
        ServiceSpec(name, server, args, restart, quorum, max_restarts, max_seconds, stamp)
    )


def create_wire(
    name: str,
    server: str,
    args: tuple[Any, ...],
    restart: str,
    quorum: bool,
    max_restarts: int,
    max_seconds: float,
) -> list[Any]:
    return [name, server, args, restart, quorum, max_restarts, float(max_seconds)]


def parse_create(body: Any, stamp: Stamp) -> ServiceSpec:
    """A `svc.create` request, stamped by the leader that takes it."""
    try:
        name, server, args, restart, quorum, max_restarts, max_seconds = body
    except (TypeError, ValueError) as exc:
        raise _fail("svc.create", body) from exc
    return parse_spec([name, server, args, restart, quorum, max_restarts, max_seconds,
                       *stamp_wire(stamp)])  # fmt: skip


def parse_name(data: Any) -> str:
    return check_name(data)


def parse_remove(body: Any) -> tuple[str, Stamp]:
    try:
        name, upto = body
    except (TypeError, ValueError) as exc:
        raise _fail("svc.remove", body) from exc
    return check_name(name), parse_stamp(upto)


def parse_failed(body: Any) -> tuple[str, str]:
    try:
        name, text = body
    except (TypeError, ValueError) as exc:
        raise _fail("svc.failed", body) from exc
    if type(text) is not str:
        raise _fail("svc.failed", body)
    return check_name(name), text[:1000]


def parse_names(body: Any) -> list[str]:
    if type(body) is not list:
        raise _fail("list of names", body)
    return [check_name(n) for n in body]


def parse_hold(sender: str, body: Any) -> list[tuple[str, Pid]]:
    """A `svc.hold` request: the services `sender` is moving, with their old pids."""
    try:
        mover, items = body
        pairs = [(check_name(name), old) for name, old in items]
    except (TypeError, ValueError) as exc:
        raise _fail("svc.hold", body) from exc
    if mover != sender or any(type(old) is not Pid for _, old in pairs):
        raise _fail("svc.hold", body)
    return pairs


def takeover_item(name: str, stamp: Stamp, restored: Restored) -> list[Any]:
    return [
        name,
        stamp_wire(stamp),
        restored is not None,
        None if restored is None else restored[0],
    ]


def parse_takeover(body: Any) -> list[tuple[str, Stamp, Restored]]:
    """A `svc.takeover` request: (name, spec stamp, state) for each moved service."""
    if type(body) is not list:
        raise _fail("svc.takeover", body)
    items = []
    for item in body:
        try:
            name, stamp, has_state, state = item
        except (TypeError, ValueError) as exc:
            raise _fail("svc.takeover item", item) from exc
        if type(has_state) is not bool:
            raise _fail("svc.takeover item", item)
        items.append((check_name(name), parse_stamp(stamp), (state,) if has_state else None))
    return items


def parse_caps(body: Any) -> frozenset[str]:
    if type(body) is not list or not all(type(c) is str for c in body):
        raise _fail("capabilities", body)
    return frozenset(body)


def parse_members(body: Any) -> tuple[dict[str, int], dict[str, int]]:
    try:
        seen, left = body
        pairs = (dict(seen), dict(left))
    except (TypeError, ValueError) as exc:
        raise _fail("members", body) from exc
    for table in pairs:
        for name, creation in table.items():
            if type(name) is not str or type(creation) is not int:
                raise _fail("members", body)
    return pairs


def parse_table(
    body: Any,
) -> tuple[list[ServiceSpec], list[tuple[str, Stamp]], frozenset[str], Any]:
    """A `svc.table` cast: specs, tombstones, what the sender can run, its members view
    (parse that last part with `parse_members`)."""
    try:
        specs, removed, caps, members = body
        tombstones = [(check_name(n), parse_stamp(s)) for n, s in removed]
    except (TypeError, ValueError) as exc:
        raise _fail("svc.table", body) from exc
    if type(specs) is not list:
        raise _fail("svc.table", body)
    return [parse_spec(s) for s in specs], tombstones, parse_caps(caps), members
