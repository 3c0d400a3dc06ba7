"""The public API contract (DESIGN.md): these names stay importable from `zmesh`."""

from __future__ import annotations

import zmesh

CONTRACT = {
    "Node", "NodeConfig", "Process", "Pid", "Ref", "Down", "Exit", "NameConflict",
    "GenServer", "Caller", "NOREPLY", "Supervisor", "DynamicSupervisor", "child",
    "HashRing", "ZmeshError", "DecodeError", "EncodeError", "ConnectError", "NoProc",
    "CallTimeout", "CallError", "ReceiveTimeout", "NodeDown", "QueueFull", "RemoteError",
    "EmptyRing", "ConfigError", "NameTaken", "SupervisorError", "ExitProcess",
    "NORMAL", "KILL", "KILLED", "NOPROC", "NOCONNECTION", "SHUTDOWN", "NAME_CONFLICT",
    "ServiceInfo", "NoQuorum",
    "ReplicatedMap", "Change", "DataError", "Presence", "PresenceEvent",
    "KV", "Conflict", "Versioned", "Unavailable",
}  # fmt: skip


def test_the_contract_names_are_exported() -> None:
    assert set(zmesh.__all__) >= CONTRACT
    for name in zmesh.__all__:
        assert hasattr(zmesh, name), name


def test_every_error_is_a_zmesh_error_and_timeouts_are_timeout_errors() -> None:
    errors = [getattr(zmesh, n) for n in zmesh.__all__ if n.endswith(("Error", "Timeout"))]
    errors += [zmesh.NoProc, zmesh.QueueFull, zmesh.NodeDown, zmesh.NameTaken, zmesh.EmptyRing]
    for cls in errors:
        assert issubclass(cls, zmesh.ZmeshError), cls
    assert issubclass(zmesh.CallTimeout, TimeoutError)
    assert issubclass(zmesh.ReceiveTimeout, TimeoutError)


def test_node_api_names_from_the_contract() -> None:
    for name in (
        "connect", "nodes", "spawn", "send", "process", "exit", "spawn_remote", "start",
        "call", "cast", "start_supervisor", "register", "whereis", "unregister", "ring",
        "address", "name", "spawn_service", "services", "stop_service", "replicated_map",
        "presence", "track", "untrack", "list", "kv_open", "kv",
    ):  # fmt: skip
        assert hasattr(zmesh.Node, name) or name in ("address", "name"), name
