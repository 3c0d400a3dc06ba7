"""Checkers for the properties a cluster owes its users, on a `Cluster` or a `Simulation`.

Each returns (or accumulates) a list of problems, one readable line each, empty when the
property holds, so a test asserts `== []` and a failure says what went wrong:

- `DeliveryLog`: per sender/receiver pair, messages arrive in the order sent, never
  twice, and with gaps only across a lost connection (`noconnection`) between them;
- `SignalLog`: exactly one `Down` per monitor, and each link's exit signal at most once;
- `registry_problems`: after `settle`, every node of a connected group agrees on one
  live owner per name (`check_everywhere`);
- `session_problems`: no session is up on a closed link (it could send nothing);
- `service_problems`: one instance per service spec (`Cluster.service_problems`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from zmesh.runtime.node import Node
from zmesh.terms import Down, Exit, Pid, Ref
from zmesh.testing.cluster import Cluster


@dataclass
class DeliveryLog:
    """Numbered messages between process pairs, and the connection losses between nodes.

    Call `watch(node)` on every node (again after each restart), stamp each message with
    `stamp(src, dst)` when sending it, and report each arrival with `received`. A gap is
    allowed only if the two nodes lost their connection (either side saw the other
    down) between the sends of the messages on both sides of it.
    """

    problems: list[str] = field(default_factory=list)
    _downs: Counter[frozenset[str]] = field(default_factory=Counter)
    _last: dict[tuple[Pid, Pid], tuple[int, int]] = field(default_factory=dict)
    received_count: int = 0

    def watch(self, node: Node) -> None:
        """Count every peer `node` sees go down (hidden ones included)."""
        name = node.name

        def on_event(event: str, peer: str) -> None:
            if event == "down":
                self._downs[frozenset((name, peer))] += 1

        node.subscribe_nodes(on_event, include_hidden=True)

    def connection_losses(self) -> int:
        """How many times, in all, a watched node saw a peer go down."""
        return sum(self._downs.values())

    def stamp(self, src: Pid, dst: Pid) -> int:
        """The connection epoch between the two pids' nodes: send it with the message."""
        return self._downs[frozenset((src.node, dst.node))]

    def received(self, src: Pid, dst: Pid, number: int, epoch: int) -> None:
        """`dst` got message `number` (0, 1, ...) from `src`, stamped `epoch` when sent."""
        self.received_count += 1
        last = self._last.get((src, dst))
        self._last[(src, dst)] = (number, epoch)
        if last is None:
            return  # what came before the first arrival may have met a connection not yet up
        before, before_epoch = last
        if number <= before:
            self.problems.append(f"{src}->{dst}: #{number} arrived after #{before}")
        elif number > before + 1 and epoch == before_epoch:
            self.problems.append(
                f"{src}->{dst}: #{before + 1}..#{number - 1} lost with no connection lost"
            )


@dataclass
class SignalLog:
    """Monitors set and links made, and the `Down`/`Exit` signals they produced."""

    monitors: dict[Ref, Pid] = field(default_factory=dict)
    downs: Counter[Ref] = field(default_factory=Counter)
    exits: Counter[tuple[Pid, Pid]] = field(default_factory=Counter)  # (receiver, from)

    def monitored(self, ref: Ref, target: Pid) -> None:
        """A monitor `ref` on `target` was set."""
        self.monitors[ref] = target

    def got(self, receiver: Pid, signal: object) -> None:
        """`receiver` got `signal` (anything else is ignored)."""
        if isinstance(signal, Down):
            self.downs[signal.ref] += 1
        elif isinstance(signal, Exit):
            self.exits[(receiver, signal.pid)] += 1

    def problems(self, gone: Iterable[Ref] = ()) -> list[str]:
        """Monitors that fired more than once or on no monitor, links that fired more than
        once, and monitors in `gone` (whose target is known dead or cut off) that never
        fired."""
        out = [f"{ref} fired {n} Downs" for ref, n in sorted(self.downs.items(), key=str) if n > 1]
        out += [
            f"Down for {ref}, which no monitor set"
            for ref in self.downs
            if ref not in self.monitors
        ]
        out += [
            f"{receiver} got {n} exit signals from {sender}"
            for (receiver, sender), n in sorted(self.exits.items(), key=str)
            if n > 1
        ]
        out += [
            f"{ref} on {self.monitors.get(ref)} never fired" for ref in gone if not self.downs[ref]
        ]
        return out


def registry_problems(cluster: Cluster, names: Iterable[str] | None = None) -> list[str]:
    """`check_everywhere`: within each group of live nodes that reach each other, every
    node maps each name to the same pid, alive on a node of that group (or all to None).

    Call it after `settle()` (and a moment for the tables to travel). `names` defaults to
    every name any live node knows.
    """
    live = cluster.live()
    if names is None:
        names = sorted({n for name in live for n in cluster[name].registered()})
    problems: list[str] = []
    for group in cluster.groups():
        for name in names:
            seen = {member: cluster[member].whereis(name) for member in group}
            owners = set(seen.values())
            if len(owners) > 1:
                problems.append(f"{name!r}: group {group} disagrees: {seen}")
                continue
            (owner,) = owners
            if owner is None:
                continue
            if owner.node not in group:
                problems.append(f"{name!r}: owner {owner} is not in group {group}")
            elif not cluster[owner.node].is_alive(owner):
                problems.append(f"{name!r}: owner {owner} is dead")
    return problems


def session_problems(cluster: Cluster) -> list[str]:
    """Sessions that are up on a closed link: the node believes it is connected but can
    send nothing, so its peer will drop the session after `down_after`."""
    problems = []
    for name in cluster.live():
        dist = cluster[name]._dist
        if dist is None:
            continue
        for peer in dist.sessions.values():
            if peer.up and peer.link.closed:
                problems.append(f"{name}'s session with {peer.name} is up on a closed link")
    return problems


def service_problems(cluster: Cluster) -> list[str]:
    """One instance per service spec, on its ring owner, in each connected group (see
    `Cluster.service_problems`)."""
    return cluster.service_problems()
