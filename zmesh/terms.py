"""Terms every node shares: process and reference identifiers, signals, exit reasons.

All are immutable and hashable, compare by value and survive the codec's round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

# The exit-reason vocabulary (OTP's names). A crash reason is "<ExceptionType>: <message>".
NORMAL: Final = "normal"
KILL: Final = "kill"  # sent by node.exit(pid, "kill"); cannot be trapped, seen as KILLED
KILLED: Final = "killed"
SHUTDOWN: Final = "shutdown"
NOPROC: Final = "noproc"
NOCONNECTION: Final = "noconnection"
NAME_CONFLICT: Final = "name_conflict"


@dataclass(frozen=True, slots=True)
class Pid:
    """A process identifier: the node's name, the process number, the node's incarnation.

    A node that restarts under the same name gets a new `creation`, so pids of its
    previous incarnation never name a live process again.
    """

    node: str
    id: int
    creation: int

    def __str__(self) -> str:
        return f"<{self.node}.{self.id}.{self.creation}>"

    def order(self) -> tuple[str, int, int]:
        """A sort key: signals fanned out over a set of pids go in this order, the same
        whatever the hash seed (deterministic simulation replays runs exactly)."""
        return (self.node, self.id, self.creation)

    def __repr__(self) -> str:
        return f"Pid({self.node!r}, {self.id}, {self.creation})"


_set_pid_node: Final = Pid.__dict__["node"].__set__
_set_pid_id: Final = Pid.__dict__["id"].__set__
_set_pid_creation: Final = Pid.__dict__["creation"].__set__


def new_pid(node: str, pid_id: int, creation: int) -> Pid:
    """`Pid(node, pid_id, creation)` by its slots, past the frozen dataclass's
    `__init__` (half the cost: once per spawn, and per pid decoded)."""
    pid = object.__new__(Pid)
    _set_pid_node(pid, node)
    _set_pid_id(pid, pid_id)
    _set_pid_creation(pid, creation)
    return pid


class Ref(NamedTuple):
    """A unique reference (monitors, calls), unique per node incarnation.

    A named tuple: made (once per call, and per monitor), hashed and compared in C.
    Like any tuple it also equals a plain `(node, id, creation)`."""

    node: str
    id: int
    creation: int

    def __str__(self) -> str:
        return f"#Ref<{self.node}.{self.id}.{self.creation}>"


@dataclass(frozen=True, slots=True)
class Down:
    """Delivered to a monitoring process when the monitored one exits (or never existed)."""

    ref: Ref
    pid: Pid
    reason: object


@dataclass(frozen=True, slots=True)
class Exit:
    """An exit signal from a linked process (or `node.exit`) seen by a process trapping exits."""

    pid: Pid
    reason: object


@dataclass(frozen=True, slots=True)
class NameConflict:
    """Sent to the losing process when a partition heals with two owners of `name`
    and the resolve policy is "notify"; `winner` keeps the name."""

    name: str
    winner: Pid


def crash_reason(exc: BaseException) -> str:
    """The exit reason of a process that raised `exc`: the exception type and its message."""
    return f"{type(exc).__name__}: {exc}"
