"""Deterministic simulation: a whole cluster in virtual time, replayable from one seed.

    def test_a_name_survives_a_partition():
        async def scenario(sim):
            await sim.partition(["n1"], ["n2", "n3"])
            await sim.settle()
            return sim["n1"].nodes()
        assert zmesh.testing.run_simulation(scenario, n=3, seed=7) == []

`Simulation` is a `Cluster` (the same methods, the same fault model) whose nodes run
their production code unchanged on a `VirtualTimeLoop`, over a `SimNetwork` instead of
ZeroMQ, with a seeded random source and a virtual wall clock (skewed per node if
asked) instead of the OS's. Nothing else is replaced, so what fails here fails in
production code; and since every input is derived from the seed, the same seed gives
the same run, event for event: `trace_digest()` is the proof.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from zmesh.errors import ConfigError
from zmesh.runtime.config import NodeConfig
from zmesh.runtime.node import Node
from zmesh.runtime.transport import FrameHandler, LostHandler
from zmesh.testing.cluster import Cluster
from zmesh.testing.sim_loop import SimulationError, VirtualTimeLoop
from zmesh.testing.sim_network import SimNetwork, SimTransport, Trace

T = TypeVar("T")

#: The virtual wall clock starts here (2026-01-01T00:00:00Z), whatever the real date.
EPOCH = 1_767_225_600.0


class SimEnvironment:
    """One simulated node's clock, random source and transport (see `Environment`)."""

    def __init__(self, sim: Simulation, name: str, incarnation: int) -> None:
        self._sim = sim
        self._name = name
        self._random = random.Random(f"zmesh-node:{sim.seed}:{name}:{incarnation}")

    def wall_time(self) -> float:
        return EPOCH + self._sim.now() + self._sim.clock_offset(self._name)

    def creation(self) -> int:
        return self._sim._next_creation(int(self.wall_time() * 1000))

    def random(self) -> float:
        return self._random.random()

    def token_bytes(self, n: int) -> bytes:
        return self._random.randbytes(n)

    def transport(
        self, config: NodeConfig, on_frame: FrameHandler, on_lost: LostHandler, **options: Any
    ) -> SimTransport:
        return SimTransport(self._sim.network, config, on_frame, on_lost, **options)


class Simulation(Cluster):
    """A `Cluster` of nodes "n1".."nN" in memory, on the running `VirtualTimeLoop`.

    `seed` decides everything random: link latencies, frame drops, nonces, backoff
    jitter. `skew` draws each node's wall-clock offset from [-skew, +skew] seconds
    (`set_skew` sets one); `drift` draws each wall clock's rate error from [-drift,
    +drift] seconds per second (`set_drift` sets one), so offsets also grow as time
    passes. Use it as `Cluster` is used, inside a `VirtualTimeLoop`: `run_simulation`
    does both.
    """

    def __init__(
        self,
        n: int = 5,
        *,
        seed: int = 0,
        skew: float = 0.0,
        drift: float = 0.0,
        **node_options: Any,
    ) -> None:
        if not isinstance(seed, int):
            raise ConfigError(f"a simulation seed is an int, got {seed!r}")
        if node_options.get("cookie") is None:
            node_options["cookie"] = f"zmesh-simulation-{seed}"
        super().__init__(n, fault_seed=seed, **node_options)
        self.seed = seed
        draw = random.Random(f"zmesh-skew:{seed}")
        #: Each node's wall-clock offset from the virtual time, seconds.
        self.skews: dict[str, float] = {
            name: draw.uniform(-skew, skew) if skew else 0.0 for name in self.names
        }
        #: Each node's wall-clock rate error (seconds gained per second) and the virtual
        #: time it applies from; `skews` holds the offset at that time.
        self.drifts: dict[str, float] = {
            name: draw.uniform(-drift, drift) if drift else 0.0 for name in self.names
        }
        self._drift_since: dict[str, float] = dict.fromkeys(self.names, 0.0)
        self._network: SimNetwork | None = None
        self._incarnations: dict[str, int] = {}
        self._last_creation = 0

    def __repr__(self) -> str:
        return f"<Simulation seed={self.seed} t={self.now():.3f} {self.names}>"

    async def __aenter__(self) -> Simulation:
        await super().__aenter__()
        return self

    @property
    def network(self) -> SimNetwork:
        """The simulated network (made on first use, on the running loop)."""
        if self._network is None:
            loop = asyncio.get_running_loop()
            if not isinstance(loop, VirtualTimeLoop):
                raise SimulationError(
                    "a Simulation runs on a VirtualTimeLoop: use zmesh.testing.run_simulation"
                    " or loop = zmesh.testing.VirtualTimeLoop()"
                )
            self._network = SimNetwork(self.seed, loop)
        return self._network

    @property
    def trace(self) -> Trace:
        """The event log: every frame sent, dropped, landed or lost, and every fault."""
        return self.network.trace

    def now(self) -> float:
        """Virtual seconds since the simulation's loop started."""
        return self._network.loop.time() if self._network is not None else 0.0

    def trace_digest(self) -> str:
        """A hash of the whole event log so far: equal for equal seeds, run after run."""
        return self.network.trace.digest()

    def clock_offset(self, name: str) -> float:
        """How far `name`'s wall clock is ahead of virtual time now (negative: behind)."""
        since = self._drift_since.get(name, 0.0)
        return self.skews.get(name, 0.0) + self.drifts.get(name, 0.0) * (self.now() - since)

    def set_skew(self, name: str, seconds: float) -> None:
        """Set `name`'s wall clock `seconds` ahead of virtual time (negative: behind);
        any drift goes on from there."""
        self._check(name)
        self.skews[name] = float(seconds)
        self._drift_since[name] = self.now()
        self.trace.record(self.now(), f"skew {name} {seconds!r}")

    def set_drift(self, name: str, rate: float) -> None:
        """Make `name`'s wall clock gain `rate` seconds per second from now (negative:
        lose; 1e-4 is 100 ppm). Its current offset is kept: the clock does not jump."""
        self._check(name)
        self.skews[name] = self.clock_offset(name)
        self._drift_since[name] = self.now()
        self.drifts[name] = float(rate)
        self.trace.record(self.now(), f"drift {name} {rate!r}")

    def _new_node(self, name: str, listen: str, seeds: list[str]) -> Node:
        network = self.network
        incarnation = self._incarnations[name] = self._incarnations.get(name, 0) + 1
        network.trace.record(self.now(), f"start {name} #{incarnation}")
        env = SimEnvironment(self, name, incarnation)
        return Node(name, listen=f"sim://{name}", seeds=seeds, env=env, **self._options)

    def _next_creation(self, wall_ms: int) -> int:
        self._last_creation = max(wall_ms, self._last_creation + 1)
        return self._last_creation

    def _install(self) -> None:
        super()._install()
        if self._network is not None:
            self.trace.record(
                self.now(),
                f"faults groups={sorted(sorted(g) for g in self._groups)}"
                f" drop={sorted((sorted(p), r) for p, r in self._drop.items())}"
                f" delay={sorted((sorted(p), d) for p, d in self._delay.items())}",
            )

    async def kill(self, name: str) -> None:
        self.trace.record(self.now(), f"kill {name}")
        await super().kill(name)

    async def pause(self, name: str) -> None:
        self.trace.record(self.now(), f"pause {name}")
        await super().pause(name)

    async def resume(self, name: str) -> None:
        self.trace.record(self.now(), f"resume {name}")
        await super().resume(name)


def run_simulation(
    test: Callable[[Simulation], Awaitable[T]],
    *,
    n: int = 5,
    seed: int = 0,
    skew: float = 0.0,
    drift: float = 0.0,
    **node_options: Any,
) -> T:
    """Run `await test(sim)` on a started, meshed `Simulation(n, seed=seed, ...)` in a
    fresh `VirtualTimeLoop`; return what it returns.

    `node_options` go to every `Node` as with `Cluster` (`load=`, `config=`, ...). An
    exception from the test propagates with a note naming the seed and how to replay it.
    Call it from a plain (not async) test function: it runs its own loop.
    """
    name = getattr(test, "__qualname__", "test")
    extra = (f", skew={skew}" if skew else "") + (f", drift={drift}" if drift else "")
    replay = f"zmesh.testing.run_simulation({name}, n={n}, seed={seed}{extra})"
    return simulate(test, n=n, seed=seed, skew=skew, drift=drift, replay=replay, **node_options)


def simulate(
    test: Callable[[Simulation], Awaitable[T]],
    *,
    n: int,
    seed: int,
    replay: str,
    skew: float = 0.0,
    drift: float = 0.0,
    **node_options: Any,
) -> T:
    """`run_simulation`, with the replay line a failure is noted with given by the caller."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise SimulationError(
            "run_simulation runs its own event loop: call it from a plain `def` test,"
            " not from inside a running loop"
        )

    async def main() -> T:
        async with Simulation(n, seed=seed, skew=skew, drift=drift, **node_options) as sim:
            return await test(sim)

    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    except BaseException as exc:
        exc.add_note(f"zmesh simulation seed={seed} failed at virtual t={loop.time():.3f}s")
        exc.add_note(f"replay: {replay}")
        raise
    finally:
        _close(loop)


def _close(loop: VirtualTimeLoop) -> None:
    """Cancel whatever still runs, let it unwind, and close the loop."""
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
