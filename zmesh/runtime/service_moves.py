"""Moving a service instance to another node with its state: the move protocol.

Run by the node that has the instance (a mixin of `Services`):
1. hold: every connected node starts holding sends by name, and confirms; then every
   message sent by name before the hold is in the old instance's mailbox. A node that
   does not confirm in time puts the move off (it is retried), since its sends could
   otherwise reach a stopped instance;
2. handoff: the old instance handles what it has queued, returns `handoff()`, stops;
3. takeover: the new owner starts the instance with `restore(state)` and registers it;
   then the mover tells every node the move is over, and held messages go to the new
   instance in order. If the target fails, the mover starts the instance again itself
   with the state, and the next plan moves it on: never lost, never doubled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from zmesh.core import service_wire as wire
from zmesh.core.registry_state import Stamp
from zmesh.errors import (
    NodeDown,
    ZmeshError,
)
from zmesh.runtime import service_instances as instances
from zmesh.runtime.service_instances import CLAIM_WINDOW, Instance

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Iterable

    from zmesh.core.service_table import ServiceSpec, ServiceTable
    from zmesh.runtime.config import NodeConfig
    from zmesh.runtime.node import Node
    from zmesh.runtime.service_holds import Holds
    from zmesh.terms import Pid

log = logging.getLogger("zmesh.services")

_HOLD_ASK_TIMEOUT = 1.0  # a peer that does not confirm a hold in this time puts a move off


class Moves:
    """The move protocol's steps and the handlers of `svc.hold`, `svc.release` and
    `svc.takeover` (a mixin of `Services`)."""

    if TYPE_CHECKING:
        node: Node
        config: NodeConfig
        table: ServiceTable
        holds: Holds
        counters: Counter[str]
        _busy: set[str]
        _closing: bool
        _running: dict[str, Instance]

        def _broadcast(self, op: str, body: Any) -> None: ...
        def _forget(self, inst: Instance) -> None: ...
        def _mark(self, names: Iterable[str] | None = None) -> None: ...
        def _now(self) -> float: ...
        def _peers(self) -> list[str]: ...
        async def _start(
            self, spec: ServiceSpec, restored: wire.Restored, *, takeover: bool = False
        ) -> Pid | None: ...

    async def _move(self, to: str, names: list[str]) -> None:
        """Move the instances of `names` (marked busy) to node `to` with their state."""
        node = self.node
        moving = {n: self._running[n] for n in names if n in self._running}
        try:
            if not await self._hold_everywhere(moving):
                return  # put off: the instances stay here, the next plan tries again
            cfg = self.config
            states = await asyncio.gather(
                *(instances.take_state(node, i, cfg.handoff_timeout) for i in moving.values())
            )
            for inst in moving.values():
                self._forget(inst)
            items = {
                name: (inst.stamp, state)
                for (name, inst), state in zip(moving.items(), states, strict=True)
            }
            taken = await self._hand_over(to, items)
            self.counters["moves"] += len(taken)
            for name, (_, state) in items.items():
                spec = self.table.get(name)
                if name not in taken and spec is not None and spec.stamp == items[name][0]:
                    # The target is gone or refused: run it here again, state and all;
                    # the next plan moves it on. Exactly one instance either way.
                    self._busy.add(name)
                    await self._start(spec, state, takeover=True)
        finally:
            # Whatever happened, the holds this move asked for end now.
            self._on_release(node.name, names)
            self._broadcast("svc.release", names)
            for name in names:
                self._busy.discard(name)
            self._mark(names)

    async def _hold_everywhere(self, moving: dict[str, Instance]) -> bool:
        """Ask every connected node to hold sends by name to `moving`; True once all
        that are still up confirmed."""
        node = self.node
        body = [node.name, [[name, inst.pid] for name, inst in moving.items()]]
        self._on_hold(node.name, body)
        dist = node._dist
        if dist is None:
            return True
        peers = self._peers()
        answers = await asyncio.gather(
            *(dist.request(p, "svc.hold", body, _HOLD_ASK_TIMEOUT) for p in peers),
            return_exceptions=True,
        )
        late = [
            p
            for p, a in zip(peers, answers, strict=True)
            if a is not True and not isinstance(a, NodeDown)
        ]
        if late:
            log.warning("%s: move of %s put off: no hold from %s", node.name, list(moving), late)
            self.counters["moves_put_off"] += 1
        return not late

    async def _hand_over(self, to: str, items: dict[str, tuple[Stamp, wire.Restored]]) -> set[str]:
        """Ask `to` to start `items` with their states; the names it took."""
        dist = self.node._dist
        if dist is None or not items:
            return set()
        body = [wire.takeover_item(name, stamp, state) for name, (stamp, state) in items.items()]
        timeout = CLAIM_WINDOW + 2 * self.config.call_timeout
        try:
            reply = await dist.request(to, "svc.takeover", body, timeout)
            return {name for name, ok in reply if ok is True and name in items}
        except (ZmeshError, TypeError, ValueError) as exc:
            log.warning("%s: handoff to %s failed: %s", self.node.name, to, exc)
            return set()

    def _on_hold(self, sender: str, body: Any) -> bool:
        """Hold sends by name to the listed services until their mover says it is done."""
        cfg = self.config
        # Outlives the slowest move: a handoff, then the target's start.
        deadline = self._now() + cfg.handoff_timeout + CLAIM_WINDOW + 2 * cfg.call_timeout
        for name, old in wire.parse_hold(sender, body):
            self.holds.for_move(name, old, sender, deadline)
        return True

    def _on_release(self, sender: str, body: Any) -> None:
        """The move by `sender` is over: held messages go to the new instance, or wait
        for one to be registered (the old instance is gone either way)."""
        names = wire.parse_names(body)
        self._mark(self.holds.end_move(sender, names, self._now() + self.config.service_hold))

    async def _on_takeover(self, sender: str, body: Any) -> list[list[Any]]:
        """Start moved instances here with their handed-over state."""
        items = wire.parse_takeover(body)  # all or nothing: refuse before starting any
        answers = await asyncio.gather(
            *(self._take(*item) for item in items), return_exceptions=True
        )
        return [[name, a is True] for (name, _, _), a in zip(items, answers, strict=True)]

    async def _take(self, name: str, stamp: Stamp, restored: wire.Restored) -> bool:
        spec = self.table.get(name)
        if self._closing or spec is None or spec.stamp != stamp:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLAIM_WINDOW + self.config.call_timeout
        while name in self._busy and loop.time() < deadline:
            await asyncio.sleep(0.005)  # a fresh start of ours that raced the move
        inst = self._running.get(name)
        if inst is not None:
            # We started it fresh before the hold reached us: every node has held its
            # sends by name since, so it has seen none of them: give it the state.
            return await instances.restore_into(self.node, inst, restored, self.config.call_timeout)
        if name in self._busy:
            return False
        self._busy.add(name)
        return await self._start(spec, restored, takeover=True) is not None
