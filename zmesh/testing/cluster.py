"""`Cluster`: nodes "n1".."nN" in this process, over real loopback tcp, with faults.

Faults act under the transport (see `faults.py`): the nodes run their real code on
real sockets, and a partition drops every frame between two groups, heartbeats and
handshakes included, so both sides declare each other down exactly as they would on a
real network. Nothing is faked above the socket.

Reconnection is the nodes' own: node k has every node started before it as a seed
(and a restarted node has all the others), so every pair has at least one member that
keeps retrying the other. After `heal`, `resume` or `restart` the mesh re-forms the
way a static-seed cluster does; `settle` waits for it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from zmesh.core.ring import HashRing
from zmesh.errors import ConfigError, ZmeshError
from zmesh.runtime.config import NodeConfig
from zmesh.runtime.dist import Distribution, Peer
from zmesh.runtime.node import Node
from zmesh.terms import Pid
from zmesh.testing.faults import LinkFaults

#: Fast failure detection and reconnection, so a fault test takes seconds: a silent
#: peer is down after 0.6 s, a handshake lost to a fault is retried within 0.6 s. The
#: node's own heartbeats: they also find a node paused above its sockets (`dist.pause()`).
TEST_CONFIG = NodeConfig(
    tick=0.1, down_after=0.6, connect_timeout=0.5, handshake_timeout=0.5, seed_retry=0.1,
    liveness="heartbeat",
)  # fmt: skip

_LOOPBACK = "tcp://127.0.0.1:0"


class WaitTimeout(ZmeshError, AssertionError, TimeoutError):
    """A condition a test waited for did not come true in time; the message says which.

    An `AssertionError`, so pytest reports it as a failed check, and a `TimeoutError`
    like every zmesh timeout.
    """


class SettleTimeout(WaitTimeout):
    """`Cluster.settle` ran out of time; the message names every node whose view is wrong."""


async def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, *, what: str = ""
) -> float:
    """Poll `predicate` (every 10 ms) until it is true; return the seconds that took.

    Raises WaitTimeout, naming `what` (or the predicate), if it is still false after
    `timeout` seconds. Use it instead of a fixed sleep before an assertion.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise WaitTimeout(f"not true within {timeout} s: {what or predicate!r}")
        await asyncio.sleep(0.01)
    return loop.time() - start


class Cluster:
    """An async context manager running nodes "n1".."nN" in this process.

        async with Cluster(3) as c:          # started, fully meshed
            c["n1"].nodes()                  # ["n2", "n3"]
            await c.partition(["n1"], ["n2", "n3"])
            await c.settle()                 # both sides have seen the other down

    `node_options` go to every `Node` (`load=[...]`, `cookie=...`, `config=...`); the
    default config is `TEST_CONFIG` (fast failure detection) and the default cookie a
    random one. `name`, `listen` and `seeds` are the cluster's to choose. `fault_seed`
    seeds the random frame drops; entering fails with SettleTimeout if the nodes have
    not meshed within `start_timeout` seconds.

    The fault methods are coroutines that install the fault and return at once; the
    nodes react on their own timers, and `settle()` waits until they have.
    """

    def __init__(
        self,
        n: int = 3,
        *,
        fault_seed: int = 0,
        start_timeout: float = 15.0,
        **node_options: Any,
    ) -> None:
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"a Cluster needs a node count of at least 1, got {n!r}")
        taken = sorted({"name", "listen", "seeds"} & node_options.keys())
        if taken:
            raise ConfigError(f"Cluster chooses {', '.join(taken)} itself; remove {taken}")
        if node_options.get("config") is None:
            node_options["config"] = TEST_CONFIG
        if node_options.get("cookie") is None:
            node_options["cookie"] = secrets.token_hex(16)
        self._names = [f"n{i}" for i in range(1, n + 1)]
        self._options = node_options
        self._start_timeout = start_timeout
        #: Each node's listen address, fixed at its first start (a restart binds it again).
        self.addresses: dict[str, str] = {}
        self._nodes: dict[str, Node] = {}
        self._faults = {
            name: LinkFaults(seed=fault_seed * 1_000_003 + i) for i, name in enumerate(self._names)
        }
        self._groups: list[frozenset[str]] = []  # empty: no partition
        self._drop: dict[frozenset[str], float] = {}
        self._delay: dict[frozenset[str], float] = {}
        # When the last frame held back by a delay since lifted is due (loop time).
        self._held_until = 0.0
        self._killed: set[str] = set()
        self._paused: set[str] = set()
        self._left: set[str] = set()  # stopped gracefully (a subset of _killed)
        # Left, then restarted where it reaches no live node: still gone for the others
        # (none has seen it back) until it shares a group with one of them.
        self._unseen: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<Cluster {self._names} killed={sorted(self._killed)} paused={sorted(self._paused)}>"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        if self._nodes:
            raise ConfigError("this Cluster was already started; make a new one")
        try:
            for name in self._names:
                await self._start(name)
            await self.settle(timeout=self._start_timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every node: running ones leave gracefully, paused ones are killed.

        Idempotent; leaves no socket open and no task running.
        """
        if self._closed:
            return
        self._closed = True
        running = [(n, node) for n, node in self._nodes.items() if n not in self._killed]
        self._killed.update(self._nodes)
        results = await asyncio.gather(
            *(node.abort() if n in self._paused else node.stop() for n, node in running),
            return_exceptions=True,
        )
        self._paused.clear()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _start(self, name: str) -> Node:
        if self._closed:
            raise ConfigError("this Cluster is closed: it starts no more nodes")
        previous = self._nodes.get(name)
        seeds = [address for other, address in self.addresses.items() if other != name]
        listen = self.addresses.get(name, _LOOPBACK)
        node = self._new_node(name, listen, seeds)
        try:
            await node.boot()
        except ConfigError as exc:
            await node.abort()
            if previous is None:
                raise
            raise ConfigError(
                f"cannot restart {name} at {listen} (another process may hold the port): {exc}"
            ) from None
        # boot() has not yielded to the loop yet, so no frame has left: faults apply to all.
        transport = self._dist_of(node)._transport
        assert transport is not None and node.address is not None
        transport.faults = self._faults[name]
        self.addresses[name] = node.address
        self._nodes[name] = node
        self._killed.discard(name)
        if name in self._left:
            self._left.discard(name)
            if not self.expected_view(name):
                self._unseen.add(name)
        self._paused.discard(name)
        return node

    def _new_node(self, name: str, listen: str, seeds: list[str]) -> Node:
        """The (unstarted) node `name`; a simulation overrides this to run it in memory."""
        return Node(name, listen=listen, seeds=seeds, **self._options)

    # -- access --------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Every node's name, in order: ["n1", ..., "nN"] (killed ones included)."""
        return list(self._names)

    def __getitem__(self, name: str) -> Node:
        """The node called `name` (its current incarnation; a killed one until restarted)."""
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r} in this cluster (nodes: {self._names})") from None

    def __iter__(self) -> Iterator[Node]:
        """Every node, in name order, killed ones included (see `live()`)."""
        return iter([self._nodes[n] for n in self._names if n in self._nodes])

    def __len__(self) -> int:
        return len(self._names)

    @property
    def killed(self) -> frozenset[str]:
        """Names of the nodes killed and not restarted."""
        return frozenset(self._killed)

    @property
    def paused(self) -> frozenset[str]:
        """Names of the nodes paused and not resumed."""
        return frozenset(self._paused)

    def live(self) -> list[str]:
        """Names of the nodes that are neither killed nor paused, in order."""
        return [n for n in self._names if n not in self._killed and n not in self._paused]

    def reachable(self, a: str, b: str) -> bool:
        """Whether frames can pass between `a` and `b` now: no partition between them and
        no drop rate of 1. (A lower drop rate or a delay leaves them reachable.)"""
        self._check(a, b)
        if a == b:
            return True
        if self._groups and not any(a in g and b in g for g in self._groups):
            return False
        return self._drop.get(frozenset((a, b)), 0.0) < 1.0

    def expected_view(self, name: str) -> list[str]:
        """What `settle` expects `name.nodes()` to be: the live nodes it can reach, sorted."""
        return sorted(m for m in self.live() if m != name and self.reachable(name, m))

    # -- faults ----------------------------------------------------------------------------------

    async def partition(self, *groups: Iterable[str]) -> None:
        """Split the cluster into `groups`: no frame crosses between two groups, in either
        direction, heartbeats included. The nodes named in no group form one more group
        together, so `partition(["n1"])` cuts n1 off from the rest.

        A partition replaces the previous one (drop rates and delays stay). The nodes
        see each other down after `down_after`; `settle()` waits for that.
        """
        sets: list[frozenset[str]] = []
        seen: set[str] = set()
        for group in groups:
            if isinstance(group, str):
                raise ConfigError(
                    f"a partition group is a list of names, got the string {group!r}: "
                    f"write partition([{group!r}], [...])"
                )
            members = frozenset(group)
            self._check(*members)
            twice = members & seen
            if twice:
                raise ConfigError(f"{sorted(twice)} named in two partition groups")
            seen |= members
            if members:
                sets.append(members)
        rest = frozenset(self._names) - seen
        self._groups = [*sets, rest] if rest else sets
        if len(self._groups) <= 1:
            self._groups = []
        self._install()

    async def heal(self) -> None:
        """Lift every partition, drop rate and delay. Paused nodes stay paused and killed
        nodes dead. The nodes reconnect by themselves (seeds); `settle()` waits for it."""
        self._groups = []
        self._drop.clear()
        self._note_held(self._delay)
        self._delay.clear()
        self._install()

    async def drop(self, a: str, b: str, rate: float) -> None:
        """Lose each frame between `a` and `b`, both directions, with probability `rate`
        (1.0 cuts the pair like a partition of two; 0.0 lifts the fault).

        Dropped frames carry messages, heartbeats and signals alike: with a rate below 1
        the nodes stay connected and messages are lost (at-most-once), or flap.
        """
        pair = self._pair(a, b)
        if not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ConfigError(f"drop rate must be within [0, 1], got {rate!r}")
        if rate:
            self._drop[pair] = float(rate)
        else:
            self._drop.pop(pair, None)
        self._install()

    async def delay(self, a: str, b: str, seconds: float) -> None:
        """Hold back each frame between `a` and `b`, both directions, by `seconds` (0 lifts
        the fault). Order is kept: frames behind a held one wait for it. A delay longer
        than `down_after` gets the pair declared down."""
        pair = self._pair(a, b)
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ConfigError(f"delay must be a number of seconds >= 0, got {seconds!r}")
        self._note_held({pair: self._delay.get(pair, 0.0)})
        if seconds:
            self._delay[pair] = float(seconds)
        else:
            self._delay.pop(pair, None)
        self._install()

    def _note_held(self, delays: dict[frozenset[str], float]) -> None:
        """Delays about to be lifted: the frames they hold still land up to that much later
        (a gap behind one, from a frame dropped before the heal, is noticed only then)."""
        if delays:
            due = asyncio.get_running_loop().time() + max(delays.values())
            self._held_until = max(self._held_until, due)

    async def kill(self, name: str) -> None:
        """Kill `name` abruptly, as SIGKILL would: no goodbye, every process gone, every
        socket closed. Its peers see the connection drop (monitors and links fire with
        "noconnection"). Killing a killed node does nothing; `restart` brings it back."""
        self._check(name)
        if name in self._killed:
            return
        self._killed.add(name)
        self._paused.discard(name)
        await self._nodes[name].abort()

    async def leave(self, name: str) -> None:
        """Stop `name` gracefully, as SIGTERM on `zmesh join` would: it hands its services
        over to their next owners and says goodbye, so its peers see it down at once.
        Counted as killed afterwards; `restart` brings it back. No-op if it is dead."""
        self._check(name)
        if name in self._killed:
            return
        if name in self._paused:
            raise ConfigError(f"{name} is paused: resume it before it can leave gracefully")
        await self._nodes[name].stop()
        self._killed.add(name)
        self._left.add(name)

    async def pause(self, name: str) -> None:
        """Freeze `name`'s networking, as SIGSTOP would: it reads, sends and times out
        nothing (its local processes still run). Its peers declare it down after
        `down_after`. Pausing a paused node does nothing; a killed one is refused."""
        self._check(name)
        if name in self._killed:
            raise ConfigError(f"{name} is killed: restart it before pausing it")
        if name not in self._paused:
            self._paused.add(name)
            self._dist_of(self._nodes[name]).pause()

    async def resume(self, name: str) -> None:
        """Undo `pause`, as SIGCONT would: what queued up is read and sent. The node and the
        peers that gave up on it find each other again by seeds. No-op unless paused."""
        self._check(name)
        if name in self._paused:
            self._paused.discard(name)
            self._dist_of(self._nodes[name]).resume()

    async def restart(self, name: str) -> Node:
        """Kill `name` (if it is not dead already) and start it again: same name, same
        address, a new incarnation (`creation`), so its old pids are dead for good.
        Returns the new node; it rejoins by itself, `settle()` waits for that."""
        self._check(name)
        await self.kill(name)
        return await self._start(name)

    # -- waiting ---------------------------------------------------------------------------------

    def mismatches(self) -> dict[str, str]:
        """For each live node whose view differs from `expected_view`, what is wrong.

        A view is right when it names exactly the expected peers, each in its current
        incarnation (a peer seen in an incarnation since killed is wrong).
        """
        return self._survey()[0]

    def _survey(self) -> tuple[dict[str, str], list[Peer]]:
        """The wrong views, and every session the right ones rest on."""
        wrong: dict[str, str] = {}
        sessions: list[Peer] = []
        for name in self.live():
            node = self._nodes[name]
            seen, want = node.nodes(), self.expected_view(name)
            if seen != want:
                wrong[name] = f"{name} sees {seen}, expected {want}"
                continue
            dist = self._dist_of(node)
            stale = []
            for m in want:
                peer = dist.peer(m)
                if peer is None or peer.creation != self._nodes[m].creation:
                    stale.append(m)
                else:
                    sessions.append(peer)
            if stale:
                wrong[name] = f"{name} sees an old incarnation of {stale}"
        return wrong, sessions

    async def settle(self, timeout: float = 10.0, *, stable_for: float | None = None) -> float:
        """Wait until every live node sees exactly the live nodes it can reach (given the
        partitions and drop rates of 1), in their current incarnations, over the same
        sessions for `stable_for` seconds (default: two heartbeat ticks); return the
        seconds that took.

        The quiet period keeps a session that is about to end (its peer's frames were
        lost before a heal and the gap is not yet noticed) from counting as settled; it
        runs on until the frames held back by a lifted delay have landed, since such a
        gap shows only when the frame behind it lands.
        Killed and paused nodes are not checked, and no node is expected to see them.
        Raises SettleTimeout naming each wrong view after `timeout` seconds.
        """
        config: NodeConfig = self._options["config"]
        quiet = 2 * config.tick if stable_for is None else stable_for
        loop = asyncio.get_running_loop()
        start = loop.time()
        since: float | None = None
        held: list[Peer] = []
        while True:
            wrong, sessions = self._survey()
            now = loop.time()
            if wrong:
                since = None
            elif (
                since is None
                or len(sessions) != len(held)
                or any(a is not b for a, b in zip(sessions, held, strict=True))
            ):
                since, held = now, sessions
            elif now - since >= quiet and now - self._held_until >= quiet:
                return now - start
            if now - start > timeout:
                detail = "; ".join(wrong.values()) or f"sessions kept changing within {quiet} s"
                raise SettleTimeout(f"cluster did not settle within {timeout} s: {detail}")
            await asyncio.sleep(0.01)

    # -- services ----------------------------------------------------------------------------------

    def groups(self) -> list[list[str]]:
        """The live nodes split into the groups whose members all reach each other, each
        sorted. Raises ConfigError when reachability is not transitive (a single cut
        link, `drop(a, b, 1.0)`, with a node that reaches both): no such groups exist,
        and on such a network a service may run on both sides of the cut link."""
        out: list[list[str]] = []
        for name in self.live():
            if not any(name in group for group in out):
                group = sorted([name, *self.expected_view(name)])
                for member in group:
                    if sorted([member, *self.expected_view(member)]) != group:
                        raise ConfigError(
                            f"{name} and {member} reach different nodes: the network is not "
                            "split into groups (heal the cut links before checking services)"
                        )
                out.append(group)
        return out

    def instances(self, service: str) -> list[Pid]:
        """Pids of the running instances of `service` on the live nodes: those that hold
        its name on their own node (an instance takes the name before its `init` runs,
        so one still trying to take it runs none of the service's code)."""
        found = []
        for name in self.live():
            node = self._nodes[name]
            pid = node._need_services().instances().get(service)
            if pid is not None and node.is_alive(pid) and node.whereis(service) == pid:
                found.append(pid)
        return found

    def service_problems(self) -> list[str]:
        """What stands between the services and their settled state, in each group of
        nodes that reach each other (see `groups`): every node holds the same specs; each spec has
        exactly one instance, on the group's ring owner of its name, registered under
        the name on every node of the group; a `quorum` spec has none in a group without
        a strict majority of the members not stopped gracefully. Empty when settled."""
        problems: list[str] = []
        groups = self.groups()
        for group in groups:
            if len(group) > 1:
                self._unseen.difference_update(group)
        known = len(self._names) - len(self._left) - len(self._unseen)
        for group in groups:
            nodes = [self._nodes[n] for n in group]
            tables = {n.name: [s.name for s in n._need_services().table.specs()] for n in nodes}
            names = tables[group[0]]
            if any(t != names for t in tables.values()):
                problems.append(f"group {group} disagrees on the specs: {tables}")
                continue
            for service in names:
                spec = nodes[0]._need_services().table.get(service)
                assert spec is not None
                running = [p for p in self.instances(service) if p.node in group]
                if spec.quorum and len(group) * 2 <= known:
                    if running:
                        problems.append(f"{service!r} runs {running} in minority {group}")
                    continue
                if len(running) != 1:
                    problems.append(f"{service!r} has {len(running)} instances in {group}")
                    continue
                owner = self._owner(group, service, spec.server)
                if running[0].node != owner:
                    problems.append(f"{service!r} runs on {running[0].node}, owner {owner}")
                seen = {n.name: n.whereis(service) for n in nodes}
                if any(pid != running[0] for pid in seen.values()):
                    problems.append(f"{service!r} is {running[0]} but registered as {seen}")
        return problems

    def _owner(self, group: list[str], service: str, server: str) -> str | None:
        """The group's owner of `service`, worked out here from the ring over the group
        and the modules each node loads (not from the services layer's own view)."""
        module = server.partition(":")[0]
        ring = HashRing(group)
        for name in ring.key_to_nodes(service, len(group)):
            node = self._nodes[name]
            if module in node._load or server in node._need_services()._objects:
                return name
        return None

    async def settle_services(self, timeout: float = 10.0) -> float:
        """`settle()`, then wait until `service_problems()` is empty; return the seconds
        that took. Raises SettleTimeout naming the problems after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self.settle(timeout=timeout)
        while problems := self.service_problems():
            if loop.time() - start > timeout:
                raise SettleTimeout(f"services did not settle in {timeout} s: {problems}")
            await asyncio.sleep(0.01)
        return loop.time() - start

    # -- internals -------------------------------------------------------------------------------

    def _check(self, *names: str) -> None:
        for name in names:
            if name not in self._faults:
                raise ConfigError(f"no node {name!r} in this cluster (nodes: {self._names})")

    def _pair(self, a: str, b: str) -> frozenset[str]:
        self._check(a, b)
        if a == b:
            raise ConfigError(f"a link joins two different nodes, got {a!r} twice")
        return frozenset((a, b))

    def _install(self) -> None:
        """Make every node's LinkFaults say what the model says."""
        for a, faults in self._faults.items():
            faults.clear()
            for b, address in self.addresses.items():
                if b == a:
                    continue
                pair = frozenset((a, b))
                if self._groups and not any(a in g and b in g for g in self._groups):
                    faults.blocked.add(address)
                if pair in self._drop:
                    faults.drop_rate[address] = self._drop[pair]
                if pair in self._delay:
                    faults.delay[address] = self._delay[pair]

    @staticmethod
    def _dist_of(node: Node) -> Distribution:
        dist = node._dist
        assert dist is not None, "every cluster node listens"
        return dist
