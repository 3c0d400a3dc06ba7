"""Node options: one typed object, defaults in one place. The CLI maps its flags onto it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from zmesh.errors import ConfigError
from zmesh.terms import Pid


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Every tunable of a node. Times are seconds, sizes bytes."""

    #: Heartbeat interval (see `liveness`): a ZeroMQ PING on every outbound connection,
    #: or with liveness "heartbeat" a node heartbeat to every peer not otherwise sent to.
    #: The node's own periodic work (its tick loop, `service_check`, the lag probe)
    #: wakes on multiples of it (zmesh/core/ticks.py): with "zmtp" an idle node wakes
    #: every other tick.
    tick: float = 1.5
    #: A peer silent for this long is declared down (a stopped or cut-off node): with
    #: the defaults between 1 s and 2.5 s after it stopped. `down_after - tick` is how
    #: long a PING may go unanswered: keep it near 1 s or more.
    down_after: float = 2.5
    #: How a silent peer is found. "zmtp": ZeroMQ's own heartbeats (a PING every `tick`
    #: from libzmq's I/O thread, no Python wake-up) close a connection left unanswered
    #: for `down_after` - `tick`, and the socket monitor reports the peer down at once;
    #: the node itself only sends a heartbeat on a link idle for `stall_after` / 2, so an
    #: idle node does next to no work. "heartbeat": a node heartbeat to every peer each
    #: `tick`, down after `down_after` of silence: it also catches a peer whose sockets
    #: answer while its event loop does not, at one Python wake-up per peer per tick.
    #: A transport with injected faults (`zmesh.testing.Cluster`), or one that is not
    #: ZeroMQ's, always works this way: ZeroMQ's heartbeats cannot see those faults.
    liveness: str = "zmtp"
    #: With liveness "zmtp": a peer whose node sent nothing for this long (its sockets
    #: answer, its event loop is stuck) is declared down (never before `down_after`).
    stall_after: float = 15.0
    #: How long `connect` waits for the handshake to finish.
    connect_timeout: float = 5.0
    #: How long a started handshake may stay incomplete before it is dropped.
    handshake_timeout: float = 5.0
    #: How often seeds that are not connected are retried.
    seed_retry: float = 0.5
    #: A peer lost without a goodbye (its connection closed, or it fell silent) is
    #: retried forever, so two nodes that both gave up on each other during a pause or
    #: a partition, or a node restarted at its old address, find each other again even
    #: if neither names the other as a seed. The delay before retry n is
    #: `min(reconnect_cap, reconnect_base * 2**n)`, less up to half of it at random
    #: (jitter). A peer that said goodbye is not retried.
    reconnect_base: float = 0.25
    reconnect_cap: float = 1.5
    #: Largest encoded message; larger sends raise EncodeError, larger frames are refused.
    max_message_size: int = 8 * 1024 * 1024
    #: Bytes queued for one peer beyond which `send` raises QueueFull (backpressure).
    max_outbox_bytes: int = 256 * 1024 * 1024
    #: Coalesced frames are cut at this size so one busy peer cannot starve the loop.
    batch_bytes: int = 256 * 1024
    #: ZeroMQ send/receive high-water marks, in frames (each frame is a batch).
    hwm: int = 10_000
    #: After a frame leaves on its own (a call, a message on an idle link; not a reply), the
    #: node polls its socket this long for the answer instead of sleeping in the selector
    #: (a wake-up saved per hop on an idle machine: remote call 1.5x -> 1.1x raw pyzmq;
    #: a round trip on loopback takes 130-190 us, so a shorter spin mostly misses).
    #: Spins that catch nothing back off (zmesh/core/spin.py). None never spins.
    busy_poll: float | None = 300e-6
    #: Default timeout of `call`, `spawn_remote` and `start(on=...)`.
    call_timeout: float = 5.0
    #: Default timeout of requests between nodes (registry, remote start).
    request_timeout: float = 5.0
    #: Tombstones of removed registrations are kept this long (reordering bound).
    tombstone_ttl: float = 60.0
    #: Loser handling when a partition heals with two owners of a name:
    #: "kill" (exit signal "name_conflict", like :global), "notify" (unregister, send
    #: `zmesh.NameConflict`), "unregister" (drop the name silently), or a function
    #: `fn(name, winner_pid, loser_pid)` run on the loser's node after the loser's
    #: registration is dropped.
    resolve: str | Callable[[str, Pid, Pid], object] = "kill"
    #: Garbage-collector thresholds while the node runs (restored when the last node
    #: stops); None leaves the interpreter's settings alone. CPython's (700, 10, 10)
    #: makes every 700 new objects trigger a collection: spawning a process allocates
    #: about eight, so spawn rate halves (measured 68k/s against 234k/s with these).
    gc_thresholds: tuple[int, int, int] | None = (100_000, 50, 100)
    #: Unauthenticated peers tracked at once; more are refused until some finish.
    max_pending_handshakes: int = 256
    #: How often each node re-checks service placement even without an event (a safety
    #: net: membership, registry and spec changes trigger it at once). A multiple of
    #: `tick`, so it wakes with the tick loop.
    service_check: float = 3.0
    #: How long a moving service's old instance gets to answer `handoff()` and stop.
    handoff_timeout: float = 5.0
    #: How long messages sent by name to a service that is moving or restarting are held
    #: (in order, on the sending node) before they are dropped and counted.
    service_hold: float = 5.0
    #: Messages held per service on one node; one more raises QueueFull.
    service_hold_max: int = 100_000
    #: Serve Prometheus metrics on http://127.0.0.1:PORT/metrics (0 picks a free port;
    #: None serves nothing). Needs prometheus-client: `pip install zmesh[metrics]`.
    metrics_port: int | None = None
    #: The interface the metrics endpoint binds.
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", "int") and (not isinstance(value, int | float) or value <= 0):
                raise ConfigError(f"NodeConfig.{f.name} must be a positive number, got {value!r}")
        if self.down_after <= self.tick:
            raise ConfigError(
                f"NodeConfig.down_after ({self.down_after}) must exceed tick ({self.tick})"
            )
        if self.liveness not in ("zmtp", "heartbeat"):
            raise ConfigError(
                f"NodeConfig.liveness must be 'zmtp' or 'heartbeat', got {self.liveness!r}"
            )
        if self.reconnect_base > self.reconnect_cap:
            raise ConfigError(
                f"NodeConfig.reconnect_base ({self.reconnect_base}) must not exceed "
                f"reconnect_cap ({self.reconnect_cap})"
            )
        if self.busy_poll is not None and (
            not isinstance(self.busy_poll, int | float) or not 0 < self.busy_poll <= 0.01
        ):
            raise ConfigError(
                f"NodeConfig.busy_poll must be None or 0 < seconds <= 0.01, got {self.busy_poll!r}"
            )
        port = self.metrics_port
        if port is not None and (type(port) is not int or not 0 <= port <= 65535):
            raise ConfigError(f"NodeConfig.metrics_port must be 0-65535 or None, got {port!r}")
        if not callable(self.resolve) and self.resolve not in ("kill", "notify", "unregister"):
            raise ConfigError(
                f"NodeConfig.resolve must be 'kill', 'notify' or 'unregister', got {self.resolve!r}"
            )
