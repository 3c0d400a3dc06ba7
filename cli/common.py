"""What every command shares: options, the event loop, a short-lived node that asks
the cluster, and the exit codes (0 success, 1 not found, 2 usage or connection error)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import typer

import zmesh

from .runner import build_curve, run

DEFAULT_PORT = 7000
DEFAULT_LISTEN = f"tcp://127.0.0.1:{DEFAULT_PORT}"
#: Names of the short-lived (hidden) nodes the commands make.
CLI_PREFIX = "zmesh-cli-"
#: How long a command waits for its seed's handshake.
CONNECT_TIMEOUT = 3.0
#: How long a command waits for each node's answer.
ASK_TIMEOUT = 5.0
NOT_FOUND = 1
USAGE = 2
T = TypeVar("T")

SeedOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--seed", "-s", help=f"Address of a node of the cluster (default {DEFAULT_LISTEN})."
    ),
]
CookieOpt = Annotated[
    str | None,
    typer.Option(
        "--cookie",
        envvar="ZMESH_COOKIE",
        help="Cluster secret (default: $ZMESH_COOKIE, else ~/.zmesh.cookie).",
    ),
]
CurveSecretOpt = Annotated[
    str | None,
    typer.Option(
        "--curve-secret",
        envvar="ZMESH_CURVE_SECRET",
        help="This node's NAME.key_secret (zmesh keygen): encrypt with CurveZMQ; needs --allow.",
    ),
]
AllowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow",
        envvar="ZMESH_ALLOW",
        help="Directory of allowed public certificates (*.key), or the files themselves.",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="One JSON object per line (stable keys, see docs/cli.md).")
]


class Failure(Exception):
    """Ends a command with one line on stderr and exit status `code`."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print `zmesh: message` on stderr and exit with `code`."""
    print(f"zmesh: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class Access:
    """How a command proves itself to the cluster: the cookie and, optionally, CURVE."""

    cookie: str | None = None
    curve_secret: str | None = None
    allow: list[str] | None = None


def curve_option(curve_secret: str | None, allow: list[str] | None) -> zmesh.Curve | None:
    """The `zmesh.Curve` for --curve-secret/--allow; None without them; usage error
    (exit 2) if only one is given."""
    if (curve_secret is None) != (not allow):
        fail("--curve-secret and --allow go together (see `zmesh keygen`)")
    return build_curve(curve_secret, allow)


def cli_node(access: Access, seeds: list[str] | None = None) -> zmesh.Node:
    """The short-lived node a command joins the cluster with: hidden, so it never enters
    the members' views, rings or registry leadership. With CURVE it is named after its
    key (the name its certificate binds), so two commands with one key cannot overlap.

    Every node it asks dials it back, so it listens on the address this host reaches
    the first seed from; for a loopback seed beside a `zmesh join` that advertises
    `$ZMESH_ADVERTISE` (`kubectl exec POD -- zmesh nodes`), the address that reaches
    the advertised one, else loopback. `$ZMESH_ADVERTISE` is that node's, not its own."""
    curve = curve_option(access.curve_secret, access.allow)
    name = curve.key_name() if curve is not None else f"{CLI_PREFIX}{os.getpid()}"
    seed = (seeds or [DEFAULT_LISTEN])[0]
    beside = os.environ.pop("ZMESH_ADVERTISE", None)
    host = local_ip_towards(seed)
    if host.startswith("127.") and beside is not None:
        host = local_ip_towards(beside)
    listen = f"tcp://{host}:0"
    return zmesh.Node(name, listen=listen, cookie=access.cookie, hidden=True, curve=curve)


def local_ip_towards(seed: str) -> str:
    """This host's source address for packets to `seed` (a UDP "connect" sends nothing);
    127.0.0.1 for an ipc:// or IPv6 seed, or one that cannot be resolved or routed."""
    address = seed.rpartition("@")[2]
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if not address.startswith("tcp://") or ":" in host or "[" in host:
        return "127.0.0.1"  # the default listen address of a node
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, int(port)))
            return str(probe.getsockname()[0])
    except (OSError, ValueError):
        return "127.0.0.1"


async def join_seed(node: zmesh.Node, seeds: list[str] | None) -> str:
    """Connect to the first seed that answers; its name. Failure (2) if none does."""
    errors = []
    for address in seeds or [DEFAULT_LISTEN]:
        try:
            return await node.connect(address, timeout=CONNECT_TIMEOUT)
        except zmesh.ConnectError as exc:
            errors.append(str(exc))
    raise Failure(
        f"cannot join the cluster: {'; '.join(errors)} "
        "(is `zmesh join` running there? pass its address with --seed, its cookie with --cookie)"
    )


def query(
    seeds: list[str] | None,
    access: Access,
    ask: Callable[[zmesh.Node, str], Awaitable[T]],
) -> T:
    """Join the cluster through a seed, run `ask(node, seed_name)`, leave; exit 2 with a
    message on a connection error, `Failure.code` on a Failure."""

    async def main() -> T:
        async with cli_node(access, seeds) as node:
            return await ask(node, await join_seed(node, seeds))

    return guarded(main)


def guarded(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()`, turning Failure and zmesh errors into one stderr line and an exit code."""
    try:
        return run(main())
    except Failure as exc:
        fail(str(exc), exc.code)
    except zmesh.ZmeshError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def members(info: dict[str, Any]) -> list[str]:
    """The cluster's member names as the node described by `info` sees them."""
    return sorted([info["name"], *info["nodes"]])


async def mesh(node: zmesh.Node, seed: str) -> dict[str, Any]:
    """Connect to every member the seed reports (not only those met so far); the seed's
    `info()`. A member that cannot be reached is reported on stderr."""
    seed_info: dict[str, Any] = await node.node_info(seed, timeout=ASK_TIMEOUT)
    addresses = seed_info.get("peer_addresses", {})
    missing = [n for n in members(seed_info) if n not in node.nodes() and n in addresses]
    results = await asyncio.gather(
        *(node.connect(f"{n}@{addresses[n]}", timeout=CONNECT_TIMEOUT) for n in missing),
        return_exceptions=True,
    )
    for name, result in zip(missing, results, strict=True):
        if isinstance(result, BaseException):
            print(f"zmesh: cannot reach node {name}: {result}", file=sys.stderr)
    return seed_info


async def cluster_info(node: zmesh.Node, seed: str) -> list[dict[str, Any]]:
    """`Node.info()` of every member the seed reports, sorted by name. A member that
    does not answer is reported on stderr."""
    seed_info = await mesh(node, seed)

    async def ask(name: str) -> dict[str, Any]:
        return await node.node_info(name, timeout=ASK_TIMEOUT)

    others = [n for n in members(seed_info) if n != seed]
    answers = await asyncio.gather(*(ask(n) for n in others), return_exceptions=True)
    infos = [seed_info]
    for name, answer in zip(others, answers, strict=True):
        if isinstance(answer, BaseException):
            print(f"zmesh: node {name} did not answer: {answer}", file=sys.stderr)
        else:
            infos.append(answer)
    return sorted(infos, key=lambda i: str(i["name"]))


async def cluster_processes(node: zmesh.Node, seed: str) -> dict[str, list[dict[str, Any]]]:
    """Every process row of every member the seed reports, by member name (all of them,
    paged: `info()` holds only each node's busiest thousand). A member that does not
    answer is reported on stderr."""
    names = members(await mesh(node, seed))

    async def ask(name: str) -> list[dict[str, Any]]:
        return await node.node_processes(name, timeout=ASK_TIMEOUT)

    answers = await asyncio.gather(*(ask(n) for n in names), return_exceptions=True)
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, BaseException):
            print(f"zmesh: node {name} did not answer: {answer}", file=sys.stderr)
        else:
            rows[name] = answer
    return rows


async def registry_synced(node: zmesh.Node, seed_info: dict[str, Any]) -> None:
    """Wait (up to ASK_TIMEOUT) until every name the seed had registered is in this
    node's replica, so code run next can call them by name."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ASK_TIMEOUT
    wanted = set(seed_info["registered"])
    while not wanted <= set(node.registered()) and loop.time() < deadline:
        await asyncio.sleep(0.01)


async def synced_whereis(node: zmesh.Node, name: str, wait: float = 1.0) -> zmesh.Pid | None:
    """`whereis(name)` once the registry table has reached this node (None after `wait`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (pid := node.whereis(name)) is None and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return pid
