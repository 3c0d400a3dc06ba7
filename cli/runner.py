"""The running half of `zmesh join`: a node in the foreground until SIGINT or SIGTERM.

`zmesh join` parses and checks its options with typer, then replaces its process (same
pid, same stdio) with this module through `os.execv`, handing the options over in the
environment (never on the command line, where `ps` would show the cookie). A node that
runs for days then holds only zmesh and what it loads: typer, click, pydantic and rich
stayed with the parser (resident memory of an idle node in a 16-node cluster: 45.9 MiB
before, 30.9 after; docs/benchmarks.md "Scale"). Nothing here imports typer, and OpenSSL
stays unloaded until something uses TLS (`lazy_tls`; about 4 MiB more).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import zmesh

from .heap import release_when_settled
from .lazy_tls import unmask_ssl
from .logs import configure

#: The environment variable that carries the parsed options to the runner.
SPEC_ENV = "ZMESH_JOIN_SPEC"
#: The runner's program: `main`, imported with `ssl` masked so that asyncio leaves
#: OpenSSL unloaded until something uses TLS (see `lazy_tls`); unless something the
#: interpreter ran first (a `.pth` file) has imported it already.
BOOT = "import sys; sys.modules.setdefault('ssl', None); from zmesh.cli.runner import main; main()"
USAGE = 2
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
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


def build_curve(curve_secret: str | None, allow: list[str] | None) -> zmesh.Curve | None:
    """The `zmesh.Curve` for --curve-secret and --allow (both given), else None."""
    if curve_secret is None or not allow:
        return None
    source: str | list[str] = allow[0] if len(allow) == 1 and Path(allow[0]).is_dir() else allow
    return zmesh.Curve(secret_key_file=curve_secret, allow=source)


def exec_runner(spec: dict[str, Any]) -> None:
    """Replace this process with the runner for `spec` (the keys `main` reads)."""
    spec = {**spec, "path0": sys.path[0]}
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, SPEC_ENV: json.dumps(spec)}
    os.execve(sys.executable, [sys.executable, "-c", BOOT], env)


def main() -> None:
    """Run the node the environment's spec describes; exit with its status."""
    unmask_ssl()  # before anything of the user's is imported
    spec = json.loads(os.environ.pop(SPEC_ENV))
    sys.path[0] = spec["path0"]  # --load finds what the parsing process would have found
    configure(spec["log_format"], spec["log_level"])
    try:
        node = zmesh.Node(
            spec["name"] or socket.gethostname().split(".")[0],
            listen=spec["listen"],
            cookie=spec["cookie"],
            seeds=spec["seed"] or [],
            discovery=spec["discover"] or [],
            advertise=spec["advertise"],
            load=spec["load"] or [],
            config=zmesh.NodeConfig(**spec["options"]),
            curve=build_curve(spec["curve_secret"], spec["allow"]),
        )
        app = spec["app"]
        application = zmesh.Application.load(app) if app is not None else None
        code = run(serve(node, application), spec["loop"])
    except zmesh.ZmeshError as exc:
        print(f"zmesh: {exc}", file=sys.stderr, flush=True)
        code = USAGE
    sys.exit(code)


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
        trim = release_when_settled()
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
        trim.cancel()
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


if __name__ == "__main__":
    main()
