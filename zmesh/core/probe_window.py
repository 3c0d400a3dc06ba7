"""How many discovery candidates to dial at once, without I/O.

Each address dialled and not yet answered holds a socket until its handshake times
out, and a ZeroMQ context has about a thousand: a `range:` over a /22 dialled all at
once ran out and stopped discovery. So each poll dials at most `limit` minus the
attempts still in flight, starting where the previous poll stopped, so that every
candidate is reached in turn however long the list.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

#: Dial attempts in flight per strategy (a quarter of ZeroMQ's default 1023 sockets).
MAX_IN_FLIGHT = 256


def probe_batch(
    candidates: Sequence[str],
    busy: Collection[str],
    in_flight: int,
    start: int,
    limit: int = MAX_IN_FLIGHT,
) -> tuple[list[str], int]:
    """The candidates to dial now and where the next poll starts.

    `busy` are candidates not to dial (connected, or an attempt under way), of which
    `in_flight` are attempts; at most `limit - in_flight` others are returned, in list
    order from index `start` (wrapping around), each once."""
    n = len(candidates)
    room = max(limit - in_flight, 0)
    if n == 0 or room == 0:
        return [], start % n if n else 0
    batch: list[str] = []
    index = start % n
    for step in range(n):
        at = (index + step) % n
        if candidates[at] not in busy:
            batch.append(candidates[at])
            if len(batch) == room:
                return batch, (at + 1) % n
    return batch, index
