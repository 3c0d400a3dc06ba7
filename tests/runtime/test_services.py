"""Services on a real Cluster (tcp on loopback): placement, calls by name, failover,
handoff with state, held messages during a move, restarts, quorum, partitions."""

from __future__ import annotations

import asyncio

import pytest
import zmesh_test_app as app

import zmesh
from zmesh import NameTaken, RemoteError, ServiceInfo
from zmesh.testing import Cluster, wait_until

pytestmark = [pytest.mark.zmesh_nodes(3, load=["zmesh_test_app"]), pytest.mark.timeout(60)]

COUNTER = "zmesh_test_app:DistributedCounter"
TRACKED = "zmesh_test_app:Tracked"


def name_owned_by(c: Cluster, owner: str, prefix: str = "svc") -> str:
    """A service name that the cluster's current ring places on `owner`."""
    ring = c[c.live()[0]].ring
    return next(f"{prefix}{i}" for i in range(10_000) if ring.key_to_node(f"{prefix}{i}") == owner)


async def test_a_service_runs_once_on_its_ring_owner_and_answers_by_name_everywhere(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    pid = await c["n1"].spawn_service("counter", app.DistributedCounter, 10)
    assert pid.node == c["n1"].ring.key_to_node("counter")
    assert c["n1"].whereis("counter") == pid
    replies = [await node.call("counter", "increment") for node in c]
    assert replies == [11, 12, 13]
    c["n3"].cast("counter", "ignored")  # casts and sends by name reach it too
    await c.settle_services()
    assert c.instances("counter") == [pid]
    for node in c:
        assert node.services() == [ServiceInfo("counter", pid.node, pid)]


async def test_spawning_the_same_spec_again_returns_the_running_pid(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    first = await c["n1"].spawn_service("counter", COUNTER, 0)
    again = await c["n2"].spawn_service("counter", app.DistributedCounter, 0)
    assert again == first
    with pytest.raises(NameTaken):
        await c["n3"].spawn_service("counter", COUNTER, 99)  # another spec: refused
    assert c.instances("counter") == [first]


async def test_racing_spawns_of_one_name_with_different_specs_create_exactly_one(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    results = await asyncio.gather(
        *(node.spawn_service("race", COUNTER, i) for i, node in enumerate(c)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, zmesh.Pid)]
    assert len(won) == 1 and all(isinstance(r, NameTaken) for r in results if r not in won)
    await c.settle_services()
    assert c.instances("race") == won


async def test_a_name_registered_to_a_plain_process_is_not_taken_by_a_service(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    assert await c["n1"].register("taken", c["n1"].spawn(app.idle))
    await wait_until(lambda: c["n2"].whereis("taken") is not None, 2)
    with pytest.raises(NameTaken):
        await c["n2"].spawn_service("taken", COUNTER)


async def test_stop_service_removes_it_everywhere_through_terminate(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    async with c["n1"].process() as me:
        pid = await c["n1"].spawn_service("tracked", TRACKED, me.pid)
        assert await me.receive(timeout=5) == ("init", pid.node, pid)
        await c["n2"].stop_service("tracked")
        assert await me.receive(timeout=5) == ("terminate", pid.node, pid, "shutdown")
    await wait_until(lambda: all(n.services() == [] for n in c), 5)
    await wait_until(lambda: all(n.whereis("tracked") is None for n in c), 5)
    await c["n2"].stop_service("tracked")  # no such service: nothing happens


async def test_a_module_no_node_loads_is_refused_before_a_spec_is_made(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    with pytest.raises(RemoteError, match="--load json"):
        await c["n1"].spawn_service("nope", "json:JSONDecoder")
    assert all(n.services() == [] for n in c)


async def test_a_server_its_module_lacks_fails_on_the_owner_and_the_spec_is_removed(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    with pytest.raises(RemoteError, match="has no attribute"):
        await c["n1"].spawn_service("missing", "zmesh_test_app:NoSuchServer")
    await wait_until(lambda: all(n.services() == [] for n in c), 5)


async def test_a_node_that_cannot_run_a_service_is_passed_over_and_harms_none(
    zmesh_cluster: Cluster,
) -> None:
    """A node that loads no module (a tool, an observer) joins: the services it would own
    by the ring stay where they are, and every spec survives its coming and going."""
    c = zmesh_cluster
    names = [f"keep{i}" for i in range(20)]
    await asyncio.gather(*(c["n1"].spawn_service(n, COUNTER, 0) for n in names))
    async with zmesh.Node(
        "bare", cookie=c["n1"]._cookie, seeds=[c.addresses["n1"]], config=c["n1"].config
    ) as bare:
        await wait_until(lambda: bare.nodes() == ["n1", "n2", "n3"], 5)
        assert any(bare.ring.key_to_node(n) == "bare" for n in names)
        await wait_until(lambda: [s.name for s in bare.services()] == sorted(names), 5)
        assert all(s.node != "bare" for s in bare.services())
        await wait_until(lambda: not c.service_problems(), 5)
        assert await bare.call(names[0], "increment") == 1
    await c.settle_services()
    assert [s.name for s in c["n2"].services()] == sorted(names)


async def test_bad_arguments_are_refused_before_anything_is_created(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    with pytest.raises(zmesh.ConfigError, match="restart"):
        await c["n1"].spawn_service("x", COUNTER, restart="temporary")
    with pytest.raises(zmesh.ConfigError, match="async function"):
        await c["n1"].spawn_service("x", app.NOT_CALLABLE)  # type: ignore[arg-type]
    with pytest.raises(zmesh.EncodeError):
        await c["n1"].spawn_service("x", COUNTER, object())
    assert c["n1"].services() == []


async def test_a_function_service_runs_and_fails_over(zmesh_cluster: Cluster) -> None:
    c = zmesh_cluster
    name = name_owned_by(c, "n3", "ping")
    pid = await c["n1"].spawn_service(name, "zmesh_test_app:pinger")
    assert pid.node == "n3"
    async with c["n1"].process() as me:
        c["n1"].send(name, (me.pid, 1))
        assert await me.receive(timeout=5) == ("pong", "n3", 1)
        await c.kill("n3")
        await c.settle_services()
        c["n1"].send(name, (me.pid, 2))
        reply = await me.receive(timeout=5)
        assert reply[0] == "pong" and reply[1] != "n3" and reply[2] == 2


async def test_failover_after_a_kill_restarts_the_service_from_its_spec(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    name = name_owned_by(c, "n2")
    await c["n1"].spawn_service(name, COUNTER, 0)
    assert await c["n1"].call(name, "increment") == 1
    await c.kill("n2")
    # A call in flight when the node dies fails (at most once: it may have been handled);
    # one made once the loss is seen waits for the new instance instead of failing.
    await wait_until(lambda: "n2" not in c["n1"].nodes(), 2)
    assert await c["n1"].call(name, "where", timeout=5) in ("n1", "n3")
    assert await c["n3"].call(name, "increment") == 1  # a killed node hands nothing over
    await c.settle_services()


async def test_a_node_joining_takes_its_services_over_with_their_state(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    name = name_owned_by(c, "n3")
    await c.leave("n3")
    pid = await c["n1"].spawn_service(name, COUNTER, 0)
    assert pid.node != "n3"
    for _ in range(5):
        await c["n1"].call(name, "increment")
    await c.restart("n3")
    await c.settle_services()
    assert c["n1"].whereis(name).node == "n3"  # type: ignore[union-attr]
    assert await c["n1"].call(name, "increment") == 6
    assert not c["n1"].is_alive(pid) and not c[pid.node].is_alive(pid)


async def test_a_graceful_leave_hands_every_service_off_and_runs_terminate(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    names = [name_owned_by(c, "n2", p) for p in ("a", "b", "c")]
    async with c["n1"].process() as me:
        for name in names:
            pid = await c["n1"].spawn_service(name, TRACKED, me.pid)
            assert pid.node == "n2"
            await me.receive(timeout=5)  # its init
            for _ in range(3):
                await c["n1"].call(name, "increment")
        await c.leave("n2")
        reports = [await me.receive(timeout=5) for _ in range(2 * len(names))]
    terminated = [r for r in reports if r[0] == "terminate"]
    assert {r[3] for r in terminated} == {"shutdown"} and len(terminated) == 3
    await c.settle_services()
    for name in names:
        assert await c["n3"].call(name, "increment") == 4
        assert await c["n3"].call(name, "restored") is True


async def test_messages_sent_by_name_during_a_move_arrive_in_order_and_none_is_lost(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    name = name_owned_by(c, "n3")
    await c.leave("n3")
    async with c["n1"].process() as me:
        await c["n1"].spawn_service(name, TRACKED, me.pid)
        await wait_until(lambda: c["n2"].whereis(name) is not None, 2)  # n2's replica too
        sent = 0
        restart = asyncio.ensure_future(c.restart("n3"))
        senders = [c["n1"], c["n2"]]
        while not (restart.done() and c["n1"].whereis(name) and c["n1"].whereis(name).node == "n3"):  # type: ignore[union-attr]
            for node in senders:  # two senders, each in its own order
                node.cast(name, ("append", (node.name, sent)))
            sent += 1
            await asyncio.sleep(0.0005)
        for _ in range(20):  # a few more after the move
            for node in senders:
                node.cast(name, ("append", (node.name, sent)))
            sent += 1
        await restart
        await c.settle_services()
        items = await c["n2"].call(name, "items")
    assert await c["n2"].call(name, "restored") is True
    held = sum(c[n].stats().get("service_held", 0) for n in ("n1", "n2"))
    assert held > 0, "nothing was held: the test did not send during the move"
    for node in senders:
        mine = [i for who, i in items if who == node.name]
        assert mine == list(range(sent)), f"{node.name}: {len(mine)} of {sent}"


async def test_a_permanent_service_that_crashes_is_restarted_within_its_intensity(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    async with c["n1"].process() as me:
        pid = await c["n1"].spawn_service("crashy", TRACKED, me.pid, max_restarts=2)
        await me.receive(timeout=5)
        for _ in range(2):
            with pytest.raises(zmesh.CallError):
                await c["n1"].call("crashy", "crash")
            await me.receive(timeout=5)  # terminate
            assert (await me.receive(timeout=5))[0] == "init"  # restarted
        assert c["n1"].whereis("crashy") not in (None, pid)
        with pytest.raises(zmesh.CallError):
            await c["n1"].call("crashy", "crash")  # the third in the window: given up
    await wait_until(lambda: all(n.services() == [] for n in c), 5)


async def test_a_transient_service_that_exits_normally_is_removed_not_restarted(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    async with c["n1"].process() as me:
        await c["n1"].spawn_service("once", TRACKED, me.pid, restart="transient")
        await me.receive(timeout=5)
        with pytest.raises(zmesh.CallError):
            await c["n2"].call("once", "exit_normally")
    await wait_until(lambda: all(n.services() == [] for n in c), 5)
    for _ in range(30):  # and it stays gone (a restart would show within a plan or two)
        assert c.instances("once") == []
        await asyncio.sleep(0.01)


async def test_an_init_that_always_fails_is_given_up_and_spawn_says_why(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    with pytest.raises(RemoteError, match="restarted too often"):
        await c["n1"].spawn_service("broken", "zmesh_test_app:FailsInit")
    await wait_until(lambda: all(n.services() == [] for n in c), 5)


async def test_both_sides_of_a_partition_run_it_and_the_heal_keeps_one_on_its_owner(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    name = name_owned_by(c, "n1")
    async with c["n2"].process() as me:
        pid = await c["n2"].spawn_service(name, TRACKED, me.pid)
        assert (await me.receive(timeout=5))[0] == "init"
        await c.partition(["n1"], ["n2", "n3"])
        await c.settle_services()  # each side runs its own
        assert len(c.instances(name)) == 2
        assert (await me.receive(timeout=5))[0] == "init"
        await c.heal()
        await c.settle_services()
        (survivor,) = c.instances(name)
        assert survivor.node == "n1"
        # The duplicate stopped through terminate, not killed outright.
        report = await me.receive(lambda m: m[0] == "terminate", timeout=5)
        assert report[1] != "n1" and report[3] == "name_conflict"
    assert survivor == pid  # the earliest registration, on the owner


async def test_a_quorum_service_stops_on_the_minority_side_and_runs_on_the_majority(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    name = name_owned_by(c, "n1")
    pid = await c["n2"].spawn_service(name, COUNTER, 0, quorum=True)
    assert pid.node == "n1"
    await c.partition(["n1"], ["n2", "n3"])
    await c.settle_services()
    (majority,) = c.instances(name)
    assert majority.node in ("n2", "n3")
    await c.heal()
    await c.settle_services()
    assert [p.node for p in c.instances(name)] == ["n1"]


@pytest.mark.zmesh_nodes(5, load=["zmesh_test_app"])
async def test_services_spread_over_the_ring_and_a_join_moves_only_those_it_owns(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    await c.leave("n5")
    await c.settle()
    names = [f"s{i}" for i in range(200)]
    await asyncio.gather(*(c["n1"].spawn_service(n, COUNTER, 0) for n in names))
    before = {n: c["n1"].whereis(n) for n in names}
    await c.restart("n5")
    await c.settle_services(timeout=20)
    after = {n: c["n2"].whereis(n) for n in names}
    moved = {n for n in names if after[n] != before[n]}
    assert moved == {n for n in names if c["n2"].ring.key_to_node(n) == "n5"}
    assert all(after[n].node == "n5" for n in moved)  # type: ignore[union-attr]
    assert sum(len(c.instances(n)) for n in names) == len(names)


async def test_a_quorum_service_is_refused_on_a_side_without_a_majority(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    await c.kill("n2")
    await c.kill("n3")  # killed, not left: still members, so n1 holds 1 of 3
    await c.settle()
    with pytest.raises(zmesh.NoQuorum, match="1 of the 3"):
        await c["n1"].spawn_service("q", COUNTER, 0, quorum=True)
    assert c["n1"].services() == []


async def test_hidden_tool_nodes_coming_and_going_leave_no_trace_in_membership(
    zmesh_cluster: Cluster,
) -> None:
    c = zmesh_cluster
    await c["n1"].spawn_service("q", COUNTER, 0, quorum=True)
    for i in range(3):
        async with zmesh.Node(
            f"tool{i}", cookie=c["n1"]._cookie, seeds=[c.addresses["n1"]], hidden=True,
            config=c["n1"].config,
        ) as tool:  # fmt: skip
            await wait_until(lambda t=tool: t.nodes() == ["n1", "n2", "n3"], 5)
            assert await tool.call("q", "increment") == i + 1
            assert [s.name for s in tool.services()] == ["q"]
    for node in c:
        services = node._need_services()
        assert services.members.names() == ["n1", "n2", "n3"]
        assert not services._gone and set(services._caps) <= {"n1", "n2", "n3"}


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("svc.add", ["x", "m:S", [], "permanent"]),
        ("svc.add", ["x", "m:S", (), "forever", False, 3, 5.0, 1.0, "n2", 1]),
        ("svc.remove", ["x", ["not a time", "n2", 1]]),
        ("svc.table", [[["x"]], [], [], [{}, {}]]),
        ("svc.table", "garbage"),
        ("svc.failed", ["x", 42]),
        ("svc.leaving", "n3"),  # n2 announcing n3's leave
        ("svc.release", [1, 2]),
        ("svc.caps", [1]),
    ],
)
async def test_malformed_service_casts_are_refused_counted_and_harmless(
    zmesh_cluster: Cluster, op: str, body: object
) -> None:
    c = zmesh_cluster
    await c["n1"].spawn_service("keep", COUNTER, 0)
    before = c["n1"].stats().get("bad_envelopes", 0)
    dist = c["n2"]._dist
    assert dist is not None
    dist.cast("n1", op, body)
    await wait_until(lambda: c["n1"].stats().get("bad_envelopes", 0) == before + 1, 5)
    assert [s.name for s in c["n1"].services()] == ["keep"]
    assert await c["n2"].call("keep", "increment") == 1
    assert c["n1"].nodes() == ["n2", "n3"]


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("svc.create", ["x"]),
        ("svc.create", ["x", "nocolon", (), "permanent", False, 3, 5.0]),
        ("svc.stop", 42),
        ("svc.hold", ["n3", [["x", "not a pid"]]]),  # a mover other than the sender
        ("svc.takeover", [["x", [1.0, "n2", 1], "yes", None]]),
    ],
)
async def test_malformed_service_requests_get_a_typed_error_and_the_node_serves_on(
    zmesh_cluster: Cluster, op: str, body: object
) -> None:
    c = zmesh_cluster
    await c["n1"].spawn_service("keep", COUNTER, 0)
    dist = c["n2"]._dist
    assert dist is not None
    with pytest.raises(zmesh.ZmeshError, match=r"malformed|must be|module:qualname"):
        await dist.request("n1", op, body, 5.0)
    assert c["n1"].stats().get("bad_requests", 0) >= 1
    assert [s.name for s in c["n1"].services()] == ["keep"]
    assert await c["n2"].call("keep", "increment") == 1
