"""zmesh: Erlang/OTP-style distribution for Python over ZeroMQ.

Processes that share nothing and talk by messages, locally and across nodes; links,
monitors and supervisors; a cluster-wide name registry; a consistent-hash ring;
services placed by the ring that fail over and hand off.
"""

import importlib
from typing import TYPE_CHECKING, Any

from zmesh.core.ring import HashRing
from zmesh.errors import (
    CallError,
    CallTimeout,
    ConfigError,
    ConnectError,
    DataError,
    DecodeError,
    EmptyRing,
    EncodeError,
    KeyTypeError,
    NameTaken,
    NodeDown,
    NoProc,
    NoQuorum,
    ProcessExited,
    QueueFull,
    ReceiveTimeout,
    RemoteError,
    Unavailable,
    ZmeshError,
)
from zmesh.runtime.config import NodeConfig
from zmesh.runtime.gen_server import NOREPLY, Caller, GenServer
from zmesh.runtime.node import Node
from zmesh.runtime.process import ExitProcess, Process
from zmesh.runtime.services import ServiceInfo
from zmesh.runtime.supervisor import (
    ChildInfo,
    ChildSpec,
    DynamicSupervisor,
    Supervisor,
    SupervisorError,
    child,
)
from zmesh.terms import (
    KILL,
    KILLED,
    NAME_CONFLICT,
    NOCONNECTION,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Down,
    Exit,
    NameConflict,
    Pid,
    Ref,
)

if TYPE_CHECKING:
    from zmesh.discovery import Strategy
    from zmesh.runtime.application import Application
    from zmesh.runtime.curve import Curve, keygen
    from zmesh.runtime.kv import KV, Conflict, Versioned
    from zmesh.runtime.presence import Presence, PresenceEvent
    from zmesh.runtime.replicated_map import Change, ReplicatedMap

#: Names imported on first use (PEP 562), so a node that never opens a store, a map,
#: discovery, CURVE or an application does not hold their modules (an idle `zmesh join`
#: stays under 30 MiB of resident memory).
_LAZY = {
    "Strategy": "zmesh.discovery",
    "Application": "zmesh.runtime.application",
    "Curve": "zmesh.runtime.curve",
    "keygen": "zmesh.runtime.curve",
    "KV": "zmesh.runtime.kv",
    "Conflict": "zmesh.runtime.kv",
    "Versioned": "zmesh.runtime.kv",
    "Presence": "zmesh.runtime.presence",
    "PresenceEvent": "zmesh.runtime.presence",
    "Change": "zmesh.runtime.replicated_map",
    "ReplicatedMap": "zmesh.runtime.replicated_map",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zmesh' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "KILL",
    "KILLED",
    "KV",
    "NAME_CONFLICT",
    "NOCONNECTION",
    "NOPROC",
    "NOREPLY",
    "NORMAL",
    "SHUTDOWN",
    "Application",
    "CallError",
    "CallTimeout",
    "Caller",
    "Change",
    "ChildInfo",
    "ChildSpec",
    "ConfigError",
    "Conflict",
    "ConnectError",
    "Curve",
    "DataError",
    "DecodeError",
    "Down",
    "DynamicSupervisor",
    "EmptyRing",
    "EncodeError",
    "Exit",
    "ExitProcess",
    "GenServer",
    "HashRing",
    "KeyTypeError",
    "NameConflict",
    "NameTaken",
    "NoProc",
    "NoQuorum",
    "Node",
    "NodeConfig",
    "NodeDown",
    "Pid",
    "Presence",
    "PresenceEvent",
    "Process",
    "ProcessExited",
    "QueueFull",
    "ReceiveTimeout",
    "Ref",
    "RemoteError",
    "ReplicatedMap",
    "ServiceInfo",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "Unavailable",
    "Versioned",
    "ZmeshError",
    "__version__",
    "child",
    "keygen",
]
