"""`zmesh top`: a live view of the cluster, refreshed every second.

Per node: processes, messages and bytes per second in and out (from the per-peer
counters), event-loop lag; below, the busiest processes by mailbox length. `q` or
Ctrl-C quits; the view is drawn on the terminal's alternate screen, so the terminal is
left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

import zmesh

from .common import (
    Access,
    AllowOpt,
    CookieOpt,
    CurveSecretOpt,
    SeedOpt,
    cli_node,
    cluster_info,
    guarded,
    join_seed,
)
from .output import console, human_bytes, millis

TRAFFIC_KEYS = ("messages_in", "messages_out", "bytes_in", "bytes_out")


def top(
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
    busiest: Annotated[int, typer.Option(help="How many of the busiest processes to show.")] = 10,
    iterations: Annotated[
        int | None, typer.Option(help="Quit after this many refreshes (default: until q).")
    ] = None,
) -> None:
    """A live view of the cluster: per node rates and lag, the busiest processes."""
    if interval <= 0:
        from .common import fail

        fail(f"--interval must be positive, got {interval}")

    async def main() -> None:
        async with cli_node(Access(cookie, curve_secret, allow), seed) as node:
            seed_name = await join_seed(node, seed)
            await watch(node, seed_name, interval, busiest, iterations)

    guarded(main)


async def watch(
    node: zmesh.Node, seed: str, interval: float, busiest: int, iterations: int | None
) -> None:
    """Redraw every `interval` s until `q`, Ctrl-C or `iterations` refreshes."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    previous: dict[str, tuple[float, dict[str, int]]] = {}
    out = console()
    with _keys(loop, stop), Live(console=out, screen=out.is_terminal, auto_refresh=False) as live:
        count = 0
        while not stop.is_set():
            infos = await cluster_info(node, seed)
            live.update(render(infos, previous, busiest, seed), refresh=True)
            count += 1
            if iterations is not None and count >= iterations:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    loop.remove_signal_handler(signal.SIGINT)


def render(
    infos: list[dict[str, Any]],
    previous: dict[str, tuple[float, dict[str, int]]],
    busiest: int,
    seed: str,
) -> Group:
    """The view of one refresh; `previous` (per node: time, traffic totals) is updated."""
    now = time.monotonic()
    nodes = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    for header in ("NODE", "PROCS", "MSG IN/s", "MSG OUT/s", "BYTES IN/s", "BYTES OUT/s", "LAG"):
        nodes.add_column(header, justify="left" if header == "NODE" else "right", no_wrap=True)
    for info in infos:
        totals = {k: 0 for k in TRAFFIC_KEYS}
        for counts in info.get("traffic", {}).values():
            for k in TRAFFIC_KEYS:
                totals[k] += counts.get(k, 0)
        rates: dict[str, float] | None = None
        before = previous.get(info["name"])
        if before is not None and now > before[0]:
            rates = {k: max(totals[k] - before[1][k], 0) / (now - before[0]) for k in totals}
        previous[info["name"]] = (now, totals)

        def rate(key: str, as_bytes: bool = False, r: dict[str, float] | None = rates) -> str:
            if r is None:
                return "…"
            return human_bytes(r[key]) if as_bytes else f"{r[key]:.0f}"

        nodes.add_row(
            info["name"],
            str(info["stats"].get("processes", 0)),
            rate("messages_in"),
            rate("messages_out"),
            rate("bytes_in", True),
            rate("bytes_out", True),
            millis(info.get("loop_lag")),
        )
    procs = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, title="busiest processes", title_justify="left"
    )
    for header in ("NODE", "PID", "NAME", "FUNCTION", "MSGQ", "RECEIVED"):
        procs.add_column(header, justify="right" if header in ("MSGQ", "RECEIVED") else "left")
    for row in _busiest(infos, busiest):
        procs.add_row(
            row["node"], row["pid"], row["name"] or "-", row["function"],
            str(row["messages"]), str(row["received"]),
        )  # fmt: skip
    head = Text(
        f"zmesh top: {len(infos)} nodes via {seed}, {time.strftime('%H:%M:%S')}  (q quits)",
        style="bold",
    )
    return Group(head, nodes, procs)


def _busiest(infos: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    rows = [row for info in infos for row in info["processes"]]
    rows.sort(key=lambda r: (-r["messages"], -r["received"]))
    return rows[:n]


@contextlib.contextmanager
def _keys(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """While inside: `q` on a terminal's stdin sets `stop` (cbreak mode, restored after)."""
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def on_key() -> None:
        data = os.read(fd, 32)
        if not data or b"q" in data.lower():
            stop.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
