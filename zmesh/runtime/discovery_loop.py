"""The shell around a discovery `Strategy`: poll it forever, join what it finds."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from zmesh.core.probe_window import probe_batch
from zmesh.runtime.curve import parse_address

if TYPE_CHECKING:
    from zmesh.discovery.strategy import Strategy
    from zmesh.runtime.membership import Membership

log = logging.getLogger("zmesh.discovery")


async def discovery_loop(membership: Membership, strategy: Strategy) -> None:
    """Poll `strategy` every `strategy.interval` (or `seed_retry`) seconds and join every
    candidate not yet connected. A failing poll is logged once per change of its error,
    and its recovery once; the loop never ends on its own (the node's close cancels it)."""
    dist = membership._dist
    start = getattr(strategy, "start", None)
    stop = getattr(strategy, "stop", None)
    if start is not None:
        try:
            await start(dist.node)
        except Exception as exc:  # e.g. no multicast route: logged, the node goes on
            log.warning("%s: discovery %s cannot start: %s", dist.node.name, strategy.name, exc)
            return
    try:
        await _poll(membership, strategy)
    finally:
        if stop is not None:
            await stop()


async def _poll(membership: Membership, strategy: Strategy) -> None:
    dist = membership._dist
    failing: str | None = None
    cursor = 0
    while membership.seeding:
        try:
            found = list(await strategy.candidates())
            if membership.seeding:
                cursor = _dial(membership, found, cursor)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a strategy's (or a dial's) failure must not stop it
            state = f"{type(exc).__name__}: {exc}"
            if state != failing:
                log.warning("%s: discovery %s failing: %s", dist.node.name, strategy.name, state)
                failing = state
        else:
            if failing is not None:
                log.warning("%s: discovery %s recovered", dist.node.name, strategy.name)
                failing = None
        await asyncio.sleep(strategy.interval or dist.config.seed_retry)


def _dial(membership: Membership, found: list[str], cursor: int) -> int:
    """Join the next window of `found` (see `zmesh.core.probe_window`); the next cursor."""
    handshake = membership._dist._handshake
    connected = membership.connected_addresses()
    pending = {c for c in found if handshake.pending(parse_address(c)[1])}
    busy = pending | {c for c in found if parse_address(c)[1] in connected}
    batch, cursor = probe_batch(found, busy, len(pending), cursor)
    membership.join_missing(batch)
    return cursor
