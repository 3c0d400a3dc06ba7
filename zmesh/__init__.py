"""zmesh: Erlang/OTP-style distribution for Python over ZeroMQ.

Processes that share nothing and talk by messages, locally and across nodes; links,
monitors and supervisors; a cluster-wide name registry; a consistent-hash ring;
services placed by the ring that fail over and hand off.
"""

from zmesh.core.ring import HashRing
from zmesh.discovery import Strategy
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
from zmesh.runtime.application import Application
from zmesh.runtime.config import NodeConfig
from zmesh.runtime.curve import Curve, keygen
from zmesh.runtime.gen_server import NOREPLY, Caller, GenServer
from zmesh.runtime.kv import KV, Conflict, Versioned
from zmesh.runtime.node import Node
from zmesh.runtime.presence import Presence, PresenceEvent
from zmesh.runtime.process import ExitProcess, Process
from zmesh.runtime.replicated_map import Change, ReplicatedMap
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
