"""`zmesh join`: run a node in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from typing import Annotated, Any

import typer

import zmesh

from .common import DEFAULT_LISTEN, USAGE, CookieOpt, SeedOpt, fail, run
from .logs import FORMATS, LEVELS, configure


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
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on http://127.0.0.1:PORT/metrics."),
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="Interface for --metrics-port (default 127.0.0.1).")
    ] = None,
    log_format: Annotated[
        str, typer.Option(help=f"Log lines on stderr: {' or '.join(FORMATS)}.")
    ] = "human",
    log_level: Annotated[str, typer.Option(help=f"One of {', '.join(LEVELS)}.")] = "info",
    loop: Annotated[
        str, typer.Option(help="Event loop: auto (uvloop when installed), asyncio, uvloop.")
    ] = "auto",
) -> None:
    """Run a node in the foreground until SIGINT or SIGTERM, then leave gracefully.

    Refusals by peers (wrong cookie, protocol mismatch) are printed once per reason and
    peer, and the seeds are retried; a name already held by a live node exits 2."""
    if log_format not in FORMATS:
        fail(f"--log-format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    if log_level not in LEVELS:
        fail(f"--log-level must be one of {', '.join(LEVELS)}, got {log_level!r}")
    configure(log_format, log_level)
    options: dict[str, Any] = {
        k: v
        for k, v in (
            ("tick", tick),
            ("down_after", down_after),
            ("metrics_port", metrics_port),
            ("metrics_host", metrics_host),
        )
        if v is not None
    }
    try:
        node = zmesh.Node(
            name or socket.gethostname().split(".")[0],
            listen=listen,
            cookie=cookie,
            seeds=seed or [],
            load=load or [],
            config=zmesh.NodeConfig(**options),
        )
        code = run(serve(node), loop)
    except zmesh.ZmeshError as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


async def serve(node: zmesh.Node) -> int:
    """Run `node` until a signal (0) or a fatal refusal (2)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reporter = SeedReporter(node.name, stop)
    async with node:
        print(f"zmesh: node {node.name} up at {node.address}", flush=True)
        metrics = node.info().get("metrics")
        if metrics:
            print(f"zmesh: metrics at {metrics}", flush=True)
        unsubscribe = reporter.watch(node)
        await stop.wait()
        unsubscribe()
    if reporter.fatal:
        return USAGE
    print(f"zmesh: node {node.name} left", flush=True)
    return 0


class SeedReporter:
    """Prints each refusal of a seed attempt once per (reason, peer) on stderr; a name
    clash sets `fatal` and stops the node."""

    def __init__(self, name: str, stop: asyncio.Event) -> None:
        self.name = name
        self.stop = stop
        self.seen: set[tuple[str, str]] = set()
        self.fatal = False

    def watch(self, node: zmesh.Node) -> Any:
        """Subscribe to `node`'s failed seed attempts; returns the unsubscribe."""
        return lambda: None

    def __call__(self, address: str, error: zmesh.ConnectError) -> None:
        reason = str(getattr(error, "reason", "") or "refused")
        if reason == "unreachable":
            return  # not up yet: the seed loop keeps trying, quietly
        if (reason, address) not in self.seen:
            self.seen.add((reason, address))
            print(f"zmesh: {error} (still retrying)" if reason != "name_clash" else
                  f"zmesh: {error}", file=sys.stderr, flush=True)  # fmt: skip
        if reason == "name_clash":
            self.fatal = True
            self.stop.set()
