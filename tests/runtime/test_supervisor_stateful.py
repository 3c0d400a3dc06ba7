"""A RuleBasedStateMachine crashes, kills and stops random children of a real supervisor
and checks, against a model, which children were restarted, in which order, and that
the supervisor dies exactly when its restart intensity is exceeded.

Bounded: 25 examples of at most 12 steps (`settings` below); about 5 s in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import zmesh
from zmesh import GenServer, Node, child


class Tagged(GenServer):
    async def init(self, tag: str, log: zmesh.Pid) -> None:
        self.node.send(log, ("started", tag))

    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        if request == "crash":
            raise RuntimeError("crash")
        if request == "stop":
            self.stop("normal")
        return None


class SupervisionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.node = Node("sm", listen=None)
        self.run(self.node.boot())
        self.log_cm = self.node.process()
        self.log = self.run(self.log_cm.__aenter__())
        self.alive = True

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 10))

    @initialize(
        strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
        restarts=st.lists(
            st.sampled_from(["permanent", "transient", "temporary"]), min_size=1, max_size=5
        ),
        max_restarts=st.integers(0, 4),
    )
    def start(self, strategy: str, restarts: list[str], max_restarts: int) -> None:
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.restart_count = 0
        # model: ordered child ids, their restart type, and whether they run
        self.ids = [f"c{i}" for i in range(len(restarts))]
        self.kinds = dict(zip(self.ids, restarts, strict=True))
        self.running = dict.fromkeys(self.ids, True)
        specs = [
            child(Tagged, i, self.log.pid, id=i, restart=self.kinds[i])  # type: ignore[arg-type]
            for i in self.ids
        ]
        # A long window: every restart of a run falls inside it, so the model is exact.
        self.sup = self.run(
            self.node.start_supervisor(
                specs, strategy=strategy, max_restarts=max_restarts, max_seconds=600
            )
        )
        assert self.drain_started() == self.ids

    def drain_started(self) -> list[str]:
        out = []
        while True:
            try:
                msg = self.run(self.log.receive(timeout=0))
            except TimeoutError:
                return out
            assert msg[0] == "started"
            out.append(msg[1])

    def pids(self) -> dict[str, Any]:
        rows = self.run(self.node.which_children(self.sup))
        return {r.id: r.pid for r in rows}

    @precondition(lambda self: self.alive and any(self.running.values()))
    @rule(data=st.data(), how=st.sampled_from(["crash", "kill", "stop"]))
    def end_a_child(self, data: st.DataObject, how: str) -> None:
        victim = data.draw(st.sampled_from([i for i in self.ids if self.running[i]]))
        pid = self.pids()[victim]
        if how == "kill":
            self.node.exit(pid, "kill")
        else:
            with contextlib.suppress(zmesh.NoProc):
                self.run(self.node.call(pid, how))
        abnormal = how != "stop"
        self.running[victim] = False
        expected = self.model_exit(victim, abnormal)
        if not self.alive:
            self.run(self.wait_dead())
            return
        started = self.run(self.collect(len(expected)))
        assert started == expected, (how, victim, self.strategy, started, expected)
        now = self.pids()
        assert sorted(now) == sorted(self.ids)
        for i in self.ids:
            assert (now[i] is not None) == self.running[i], (i, now, self.running)

    def model_exit(self, victim: str, abnormal: bool) -> list[str]:
        kind = self.kinds[victim]
        restart = kind == "permanent" or (kind == "transient" and abnormal)
        if not restart:
            if kind == "temporary":
                self.ids.remove(victim)
                del self.running[victim]
            return []
        self.restart_count += 1
        if self.restart_count > self.max_restarts:
            self.alive = False
            return []
        index = self.ids.index(victim)
        if self.strategy == "one_for_one":
            affected = [victim]
        elif self.strategy == "one_for_all":
            affected = list(self.ids)
        else:
            affected = self.ids[index:]
        for i in affected:
            self.running[i] = True
        return affected

    async def collect(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            msg = await self.log.receive(timeout=5)
            out.append(msg[1])
        return out

    async def wait_dead(self) -> None:
        for _ in range(500):
            if not self.node.is_alive(self.sup):
                break
            await asyncio.sleep(0.002)
        assert not self.node.is_alive(self.sup)
        assert self.node.processes() == [self.log.pid]

    @rule()
    def observe(self) -> None:
        """The supervisor's own view matches the model (and nothing restarts unasked)."""
        if self.alive:
            now = self.pids()
            assert {i for i, pid in now.items() if pid is not None} == {
                i for i, up in self.running.items() if up
            }
        assert self.drain_started() == []

    @invariant()
    def supervisor_alive_matches_model(self) -> None:
        if hasattr(self, "sup"):
            assert self.node.is_alive(self.sup) == self.alive

    def teardown(self) -> None:
        self.run(self.log_cm.__aexit__(None, None, None))
        self.run(self.node.stop())
        self.loop.close()


SupervisionMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=12, deadline=None
)
test_supervision = SupervisionMachine.TestCase
