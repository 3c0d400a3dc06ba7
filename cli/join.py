"""`zmesh join`: run a node in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

from typing import Annotated, Any

import typer

import zmesh

from .common import (
    DEFAULT_LISTEN,
    AllowOpt,
    CookieOpt,
    CurveSecretOpt,
    SeedOpt,
    curve_option,
    fail,
)
from .config_file import read_config
from .logs import FORMATS, LEVELS
from .runner import exec_runner


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
    try:
        curve_option(curve_secret, allow)  # refuses one without the other, and bad keys
    except zmesh.ZmeshError as exc:
        fail(str(exc))
    exec_runner(
        {
            "name": name, "listen": listen, "cookie": cookie, "seed": seed,
            "discover": discover, "advertise": advertise, "load": load, "options": options,
            "curve_secret": curve_secret, "allow": allow, "app": app,
            "log_format": log_format, "log_level": log_level, "loop": loop,
        }
    )  # fmt: skip
