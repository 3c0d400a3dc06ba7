"""`zmesh join` runs a node in the foreground; the other commands inspect a running cluster."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer

import zmesh

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Erlang-style distribution for Python: run and inspect zmesh nodes.",
)

DEFAULT_PORT = 7000
DEFAULT_LISTEN = f"tcp://127.0.0.1:{DEFAULT_PORT}"
T = TypeVar("T")

SeedOpt = Annotated[
    list[str] | None, typer.Option("--seed", "-s", help="Address of a node to join (repeatable).")
]
CookieOpt = Annotated[
    str | None,
    typer.Option(
        "--cookie",
        envvar="ZMESH_COOKIE",
        help="Cluster secret (default: $ZMESH_COOKIE, else ~/.zmesh.cookie).",
    ),
]


def _run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """Run `main` on uvloop when installed (zmesh[fast]) unless `loop` is "asyncio"."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise zmesh.ConfigError("--loop uvloop: uvloop is not installed") from None
        else:
            result: T = uvloop.run(main)  # typed here: uvloop may be absent for mypy
            return result
    return asyncio.run(main)


@app.command()
def join(
    name: Annotated[
        str | None, typer.Argument(help="Node name, unique in the cluster (default: host name).")
    ] = None,
    listen: Annotated[
        str, typer.Option("--listen", "-l", help="Endpoint to bind (tcp:// or ipc://).")
    ] = DEFAULT_LISTEN,
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    load: Annotated[
        list[str] | None,
        typer.Option("--load", help="Module whose functions and classes peers may start here."),
    ] = None,
    tick: Annotated[float | None, typer.Option(help="Heartbeat interval, seconds.")] = None,
    down_after: Annotated[
        float | None, typer.Option(help="Silence after which a peer is down, seconds.")
    ] = None,
    loop: Annotated[
        str, typer.Option(help="Event loop: auto (uvloop when installed), asyncio, uvloop.")
    ] = "auto",
) -> None:
    """Run a node in the foreground until SIGINT or SIGTERM, then leave gracefully."""
    options: dict[str, Any] = {}
    if tick is not None:
        options["tick"] = tick
    if down_after is not None:
        options["down_after"] = down_after
    try:
        config = zmesh.NodeConfig(**options)
        node = zmesh.Node(
            name or socket.gethostname().split(".")[0],
            listen=listen,
            cookie=cookie,
            seeds=seed or [],
            load=load or [],
            config=config,
        )
        _run(_serve(node), loop)
    except zmesh.ZmeshError as exc:
        typer.echo(f"zmesh: {exc}", err=True)
        raise typer.Exit(2) from None


async def _serve(node: zmesh.Node) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with node:
        print(f"zmesh: node {node.name} up at {node.address}", flush=True)
        await stop.wait()
    print(f"zmesh: node {node.name} left", flush=True)


def _query(seed: list[str] | None, cookie: str | None, fn: Callable[[zmesh.Node, str], Any]) -> Any:
    async def main() -> Any:
        # Hidden: a query never enters the cluster's membership, ring or registry leadership.
        node = zmesh.Node(f"zmesh-cli-{os.getpid()}", cookie=cookie, hidden=True)
        async with node:
            target = await node.connect((seed or [DEFAULT_LISTEN])[0])
            return await fn(node, target)

    try:
        return _run(main())
    except zmesh.ZmeshError as exc:
        typer.echo(f"zmesh: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def nodes(seed: SeedOpt = None, cookie: CookieOpt = None) -> None:
    """List the nodes of the cluster that SEED belongs to."""

    async def ask(node: zmesh.Node, target: str) -> Any:
        info = await node.node_info(target)
        return sorted([target, *info["nodes"]])

    for name in _query(seed, cookie, ask):
        typer.echo(name)


@app.command()
def ps(seed: SeedOpt = None, cookie: CookieOpt = None) -> None:
    """List the processes on every node of the cluster."""

    async def ask(node: zmesh.Node, target: str) -> Any:
        rows = []
        for name in sorted([target, *node.nodes()]):
            info = await node.node_info(name)
            rows.extend(info["processes"])
        return rows

    for row in _query(seed, cookie, ask):
        typer.echo(json.dumps(row))


async def _synced(node: zmesh.Node, name: str) -> zmesh.Pid | None:
    """`whereis(name)` once the seed's registry table has reached this node."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while (pid := node.whereis(name)) is None and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return pid


@app.command()
def whereis(
    name: Annotated[str, typer.Argument(help="A globally registered name.")],
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
) -> None:
    """Print the pid registered under NAME (exit 1 if there is none)."""

    async def ask(node: zmesh.Node, target: str) -> Any:
        return await _synced(node, name)

    pid = _query(seed, cookie, ask)
    if pid is None:
        typer.echo(f"zmesh: no process is registered as {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(str(pid))


@app.command()
def call(
    name: Annotated[str, typer.Argument(help="A registered GenServer.")],
    request: Annotated[str, typer.Argument(help="The request: JSON, or else a plain string.")],
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 5.0,
) -> None:
    """Call the GenServer registered as NAME and print its reply."""
    try:
        value: Any = json.loads(request)
    except json.JSONDecodeError:
        value = request

    async def ask(node: zmesh.Node, target: str) -> Any:
        await _synced(node, name)
        return await node.call(name, value, timeout=timeout)

    reply = _query(seed, cookie, ask)
    try:
        typer.echo(json.dumps(reply))
    except TypeError:
        typer.echo(repr(reply))


@app.command()
def ring(
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    key: Annotated[list[str] | None, typer.Option(help="Show which node owns KEY.")] = None,
) -> None:
    """Print the cluster's hash ring (its nodes), and the owner of each --key."""

    async def ask(node: zmesh.Node, target: str) -> Any:
        info = await node.node_info(target)
        members = [target, *info["nodes"]]
        return zmesh.HashRing(members)

    the_ring = _query(seed, cookie, ask)
    typer.echo(repr(the_ring))
    for k in key or []:
        typer.echo(f"{k} -> {the_ring.key_to_node(k)}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
