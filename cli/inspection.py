"""The inspection commands: nodes, ps, info, whereis, call, send, ring, services.

Each asks the cluster through a seed, then prints a table or `--json` lines; the keys
of every JSON object are documented in docs/cli.md and kept stable.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

import zmesh

from .common import (
    ASK_TIMEOUT,
    NOT_FOUND,
    Access,
    AllowOpt,
    CookieOpt,
    CurveSecretOpt,
    Failure,
    JsonOpt,
    SeedOpt,
    cluster_info,
    cluster_processes,
    fail,
    members,
    mesh,
    query,
    synced_whereis,
)
from .output import Column, emit, human_bytes, human_seconds, millis, print_json, to_json

NODE_COLUMNS = [
    Column("name", "NODE"),
    Column("address", "ADDRESS"),
    Column("incarnation", "INCARNATION", right=True),
    Column("uptime", "UPTIME", human_seconds, right=True),
    Column("processes", "PROCS", right=True),
    Column("peers", "PEERS", lambda v: ", ".join(v) if v else "-"),
]

PS_COLUMNS = [
    Column("node", "NODE"),
    Column("pid", "PID"),
    Column("name", "NAME"),
    Column("function", "FUNCTION"),
    Column("messages", "MSGQ", right=True),
    Column("received", "RECEIVED", right=True),
    Column("links", "LINKS", right=True),
    Column("monitors", "MONITORS", right=True),
    Column("monitored_by", "MONITORED BY", right=True),
]


def node_row(info: dict[str, Any]) -> dict[str, Any]:
    """A `zmesh nodes` row from a node's `info()`."""
    return {
        "name": info["name"],
        "address": info["address"],
        "incarnation": info["creation"],
        "uptime": round(info.get("uptime", 0.0), 3),
        "processes": info["stats"].get("processes", 0),
        "peers": peer_names(info),
    }


def peer_names(info: dict[str, Any]) -> list[str]:
    """The members a node is connected to (hidden nodes, like the commands', left out)."""
    return list(info["nodes"])


def nodes(
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the cluster's nodes: address, incarnation, uptime, processes, peers."""
    infos = query(seed, Access(cookie, curve_secret, allow), cluster_info)
    rows = [node_row(i) for i in infos]
    emit(rows, NODE_COLUMNS, as_json=json_)


def ps(
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    json_: JsonOpt = False,
    node: Annotated[
        list[str] | None, typer.Option("--node", "-n", help="Only this node (repeatable).")
    ] = None,
) -> None:
    """List the processes of every node: pid, registered name, function or GenServer
    class, mailbox length, messages received, links and monitors."""
    by_node = query(seed, Access(cookie, curve_secret, allow), cluster_processes)
    if node:
        unknown = sorted(set(node) - set(by_node))
        if unknown:
            fail(f"no node {', '.join(unknown)} in the cluster", NOT_FOUND)
    rows = [row for name in sorted(by_node) if not node or name in node for row in by_node[name]]
    emit(rows, PS_COLUMNS, as_json=json_)


def info(
    name: Annotated[str, typer.Argument(help="A node of the cluster.")],
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show one node: identity, uptime, memory, event-loop lag, peers and counters."""

    async def ask(node: zmesh.Node, target: str) -> dict[str, Any]:
        if name not in members(await mesh(node, target)):
            raise Failure(f"no node {name!r} in the cluster (see `zmesh nodes`)", NOT_FOUND)
        info: dict[str, Any] = await node.node_info(name, timeout=ASK_TIMEOUT)
        return info

    got = query(seed, Access(cookie, curve_secret, allow), ask)
    summary = {
        "name": got["name"],
        "address": got["address"],
        "incarnation": got["creation"],
        "os_pid": got.get("os_pid"),
        "python": got.get("python"),
        "uptime": got.get("uptime"),
        "memory": got.get("memory"),
        "loop_lag": got.get("loop_lag"),
        "processes": got["stats"].get("processes", 0),
        "peers": peer_names(got),
        "registered": got["registered"],
        "metrics": got.get("metrics"),
        "stats": got["stats"],
        "traffic": got.get("traffic", {}),
    }
    if json_:
        print_json(summary)
        return
    shown = {
        **{k: v for k, v in summary.items() if k not in ("stats", "traffic")},
        "uptime": human_seconds(summary["uptime"]),
        "memory": human_bytes(summary["memory"]),
        "loop_lag": millis(summary["loop_lag"]),
        "peers": ", ".join(summary["peers"]) or "-",
        "registered": ", ".join(summary["registered"]) or "-",
    }
    rows = [{"key": k, "value": v} for k, v in shown.items()]
    rows += [
        {"key": k, "value": v}
        for k, v in sorted(summary["stats"].items())
        if k not in ("processes", "peers")
    ]
    emit(rows, [Column("key", "FIELD"), Column("value", "VALUE")], as_json=False)
    traffic = [{"peer": p, **c} for p, c in sorted(summary["traffic"].items())]
    if traffic:
        keys = [k for k in traffic[0] if k != "peer"]
        emit(traffic, [Column("peer", "PEER"), *(Column(k, k.upper(), right=True) for k in keys)],
             as_json=False)  # fmt: skip


def whereis(
    name: Annotated[str, typer.Argument(help="A globally registered name.")],
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print the pid registered as NAME (exit 1 if there is none)."""

    async def ask(node: zmesh.Node, target: str) -> zmesh.Pid:
        return await resolve(node, target, name)

    pid = query(seed, Access(cookie, curve_secret, allow), ask)
    row = {"name": name, "pid": str(pid), "node": pid.node}
    if json_:
        print_json(row)
    else:
        typer.echo(str(pid))


async def resolve(node: zmesh.Node, seed: str, name: str) -> zmesh.Pid:
    """The pid registered as `name`, once this node's replica has it; Failure(1) if
    the seed's table does not hold it."""
    if name not in (await node.node_info(seed, timeout=ASK_TIMEOUT))["registered"]:
        raise Failure(f"no process is registered as {name!r} (see `zmesh ps`)", NOT_FOUND)
    pid = await synced_whereis(node, name, wait=ASK_TIMEOUT)
    if pid is None:
        raise Failure(f"no process is registered as {name!r} (see `zmesh ps`)", NOT_FOUND)
    return pid


def parse_json(text: str, what: str) -> Any:
    """`text` as JSON, or Failure(2) saying how to write it."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(
            f"the {what} is not JSON ({exc.msg} at column {exc.colno}): {text!r}; "
            f"""write a string as '"text"', a list as '[1, "a"]'"""
        )


def call(
    name: Annotated[str, typer.Argument(help="A registered GenServer.")],
    request: Annotated[str, typer.Argument(help="The request, as JSON (e.g. '\"increment\"').")],
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 5.0,
    json_: JsonOpt = False,
) -> None:
    """Call the GenServer registered as NAME and print its reply as JSON."""
    value = parse_json(request, "request")

    async def ask(node: zmesh.Node, target: str) -> Any:
        await resolve(node, target, name)
        try:
            return await node.call(name, value, timeout=timeout)
        except zmesh.CallTimeout:
            raise Failure(f"{name!r} did not reply within {timeout} s (--timeout)") from None
        except zmesh.NoProc as exc:
            raise Failure(f"{name!r} exited before replying: {exc}", NOT_FOUND) from None

    reply = query(seed, Access(cookie, curve_secret, allow), ask)
    print_json({"name": name, "reply": reply} if json_ else reply)


def send(
    name: Annotated[str, typer.Argument(help="A registered process.")],
    message: Annotated[str, typer.Argument(help="The message, as JSON.")],
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Send a message to the process registered as NAME (no reply is awaited)."""
    value = parse_json(message, "message")

    async def ask(node: zmesh.Node, target: str) -> zmesh.Pid:
        pid = await resolve(node, target, name)
        node.send(pid, value)
        return pid

    pid = query(seed, Access(cookie, curve_secret, allow), ask)
    if json_:
        print_json({"name": name, "pid": str(pid), "sent": to_json(value)})
    else:
        typer.echo(f"sent to {name} {pid}")


def ring(
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    key: Annotated[
        list[str] | None, typer.Option("--key", "-k", help="Show which node owns KEY (repeatable).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Show the seed's hash ring: members, weights, share of the keys; or each --key's owner."""

    async def ask(node: zmesh.Node, target: str) -> dict[str, Any]:
        info: dict[str, Any] = await node.node_info(target, timeout=ASK_TIMEOUT)
        return info["ring"]  # type: ignore[no-any-return]

    spec = query(seed, Access(cookie, curve_secret, allow), ask)
    weights: dict[str, int] = spec["weights"]
    the_ring = zmesh.HashRing(weights, vnodes=spec["vnodes"])
    if key:
        rows: list[dict[str, Any]] = [{"key": k, "node": the_ring.key_to_node(k)} for k in key]
        emit(rows, [Column("key", "KEY"), Column("node", "NODE")], as_json=json_)
        return
    share = ring_shares(the_ring)
    rows = [
        {"node": n, "weight": w, "vnodes": spec["vnodes"] * w, "share": round(share[n], 4)}
        for n, w in sorted(weights.items())
    ]
    emit(
        rows,
        [
            Column("node", "NODE"),
            Column("weight", "WEIGHT", right=True),
            Column("vnodes", "VNODES", right=True),
            Column("share", "SHARE", lambda v: f"{v * 100:.1f}%", right=True),
        ],
        as_json=json_,
    )


def services(
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the cluster's services: where each runs (node and pid, "-" while it moves)."""

    async def ask(node: zmesh.Node, target: str) -> list[dict[str, Any]]:
        info: dict[str, Any] = await node.node_info(target, timeout=ASK_TIMEOUT)
        return list(info["services"])

    columns = [
        Column("name", "SERVICE"),
        Column("node", "NODE"),
        Column("pid", "PID"),
        Column("server", "SERVER"),
        Column("restart", "RESTART"),
        Column("quorum", "QUORUM", lambda v: "yes" if v else "no"),
    ]
    emit(query(seed, Access(cookie, curve_secret, allow), ask), columns, as_json=json_)


def ring_shares(the_ring: zmesh.HashRing, samples: int = 4096) -> dict[str, float]:
    """Each node's share of the keys, estimated from `samples` keys."""
    counts = dict.fromkeys(the_ring.nodes, 0)
    for i in range(samples):
        counts[the_ring.key_to_node(f"sample:{i}")] += 1
    return {n: c / samples for n, c in counts.items()}
