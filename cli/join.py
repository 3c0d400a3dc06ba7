"""`zmesh join`: run a node in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

import zmesh

from .common import (
    DEFAULT_LISTEN,
    USAGE,
    AllowOpt,
    CookieOpt,
    CurveSecretOpt,
    SeedOpt,
    curve_option,
    fail,
    run,
)
from .config_file import read_config
from .logs import FORMATS, LEVELS, configure


def join(
    name: Annotated[
        str | None, typer.Argument(help="Node name, unique in the cluster (default: host name).")
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen", "-l", help=f"Endpoint to bind (tcp:// or ipc://; default {DEFAULT_LISTEN})."
        ),
    ] = None,
    seed: SeedOpt = None,
    discover: Annotated[
        list[str] | None,
        typer.Option(
            "--discover",
            help="How to find peers, polled forever (repeatable): static:ADDR[,ADDR...], "
            "range:HOST_OR_CIDR:PORT[-PORT], file:PATH, gossip[:GROUP:PORT], dns:NAME:PORT.",
        ),
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            help="Address peers are told to dial (default $ZMESH_ADVERTISE, else the bound "
            "one; a wildcard bind advertises the host's routable IP).",
        ),
    ] = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    load: Annotated[
        list[str] | None,
        typer.Option("--load", help="Module whose functions and classes peers may start here."),
    ] = None,
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="Application to run once the node is up: module:start (async def "
            "start(node)) or module:Class (a zmesh.Application). Its top process exiting "
            "on its own ends the node (exit 1 unless it exited normal).",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="TOML file with these options (name, listen, advertise, discover, seed, "
            "load, app, cookie, and a [node] table of NodeConfig fields); flags win.",
        ),
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
    peer, and the seeds are retried; a name already held by a live node exits 2.

    With --curve-secret and --allow every connection is CurveZMQ-encrypted and only the
    listed keys connect; write seeds as NAME@tcp://HOST:PORT. SIGHUP re-reads --allow
    (so does any change to its files): peers whose keys were removed are disconnected."""
    if log_format not in FORMATS:
        fail(f"--log-format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    if log_level not in LEVELS:
        fail(f"--log-level must be one of {', '.join(LEVELS)}, got {log_level!r}")
    configure(log_format, log_level)
    file = read_config(config) if config is not None else {}
    name = name if name is not None else file.get("name")
    listen = listen if listen is not None else file.get("listen", DEFAULT_LISTEN)
    advertise = advertise if advertise is not None else file.get("advertise")
    app = app if app is not None else file.get("app")
    cookie = cookie if cookie is not None else file.get("cookie")
    seed = seed or file.get("seed")
    discover = discover or file.get("discover")
    load = load or file.get("load")
    options: dict[str, Any] = dict(file.get("node", {}))
    options |= {
        k: v
        for k, v in (
            ("tick", tick),
            ("down_after", down_after),
            ("metrics_port", metrics_port),
            ("metrics_host", metrics_host),
        )
        if v is not None
    }
    curve = curve_option(curve_secret, allow)
    try:
        node = zmesh.Node(
            name or socket.gethostname().split(".")[0],
            listen=listen,
            cookie=cookie,
            seeds=seed or [],
            discovery=discover or [],
            advertise=advertise,
            load=load or [],
            config=zmesh.NodeConfig(**options),
            curve=curve,
        )
        application = zmesh.Application.load(app) if app is not None else None
        code = run(serve(node, application), loop)
    except zmesh.ZmeshError as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


async def serve(node: zmesh.Node, app: zmesh.Application | None = None) -> int:
    """Run `node` (and `app` on it) until a signal (0), a fatal refusal (2), or the
    application's top process exiting on its own (0 if "normal", else 1)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if node.curve is not None:
        loop.add_signal_handler(signal.SIGHUP, node.reload_allow_list)
    reporter = SeedReporter(node, stop)
    unsubscribe = reporter.watch(node)  # before boot: the first attempt is reported too
    async with node:
        print(f"zmesh: node {node.name} up at {node.address}", flush=True)
        if node.advertised != node.address:
            print(f"zmesh: advertised as {node.advertised}", flush=True)
        metrics = node.info().get("metrics")
        if metrics:
            print(f"zmesh: metrics at {metrics}", flush=True)
        if app is None:
            await stop.wait()
            ended: object = None
        else:
            try:
                ended = await app.serve(node, stop)
            except Exception as exc:  # the user's start/stop: report it, leave, exit 1
                print(f"zmesh: application failed: {exc!r}", file=sys.stderr, flush=True)
                ended = f"failed: {type(exc).__name__}"
        unsubscribe()
    if reporter.fatal:
        return USAGE
    if ended is not None:
        print(f"zmesh: node {node.name} left: its application ended ({ended})", flush=True)
        return 0 if ended == zmesh.NORMAL else 1
    print(f"zmesh: node {node.name} left", flush=True)
    return 0


class SeedReporter:
    """Reports failed seed attempts on stderr, once per (reason, seed); "unreachable"
    (not up yet) stays quiet. A name clash that outlasts failure detection (so the
    holder is not a stale entry for a node that just died) sets `fatal` and stops."""

    def __init__(self, node: zmesh.Node, stop: asyncio.Event) -> None:
        self.stop = stop
        self.grace = node.config.down_after + 2 * node.config.tick
        self.seen: set[tuple[str, str]] = set()
        self.clash_since: dict[str, float] = {}
        self.fatal = False

    def watch(self, node: zmesh.Node) -> Callable[[], None]:
        """Subscribe to `node`'s failed seed attempts; returns the unsubscribe."""
        return node.on_seed_error(self)

    def __call__(self, address: str, error: zmesh.ConnectError) -> None:
        reason = error.reason
        if reason == "unreachable":
            return
        if reason == "name_clash":
            now = time.monotonic()
            since = self.clash_since.setdefault(address, now)
            if now - since >= self.grace and not self.fatal:
                self.fatal = True
                print(f"zmesh: {error}; choose another name", file=sys.stderr, flush=True)
                self.stop.set()
            return
        if (reason, address) not in self.seen:
            self.seen.add((reason, address))
            print(f"zmesh: {error} (retrying)", file=sys.stderr, flush=True)
