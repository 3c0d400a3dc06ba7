"""What `Node.info()` reports, and the Prometheus endpoint of `NodeConfig.metrics_port`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import zmesh
from zmesh import GenServer, Node, NodeConfig, child

COOKIE = "inspect-cookie"


class Box(GenServer):
    async def handle_call(self, request: Any, caller: zmesh.Caller) -> Any:
        return request


async def idle(proc: zmesh.Process) -> None:
    await proc.receive(lambda m: m == "stop")


async def row_of(node: Node, pid: zmesh.Pid) -> dict[str, Any]:
    return next(r for r in node.info()["processes"] if r["pid"] == str(pid))


async def test_process_rows_name_the_function_the_class_and_the_registered_name() -> None:
    async with Node("n", cookie=COOKIE) as node:
        worker = node.spawn(idle)
        server = await node.start(Box, name="box")
        async with node.process() as me:
            rows = {r["pid"]: r for r in node.info()["processes"]}
            assert rows[str(worker)]["function"] == f"{__name__}:idle"
            assert rows[str(worker)]["name"] is None
            assert rows[str(server)]["function"] == f"{__name__}:Box"
            assert rows[str(server)]["name"] == "box"
            assert rows[str(me.pid)]["function"] == "(mailbox)"
            assert set(rows[str(worker)]) == {
                "node", "pid", "name", "function", "messages", "received", "links",
                "monitors", "monitored_by",
            }  # fmt: skip


async def test_rows_count_queued_and_received_messages_links_and_monitors() -> None:
    async with Node("n", listen=None) as node:
        worker = node.spawn(idle)
        async with node.process() as me:
            me.link(worker)
            me.monitor(worker)
            for i in range(3):
                node.send(worker, i)
            await asyncio.sleep(0)
            row = await row_of(node, worker)
            assert (row["messages"], row["received"]) == (3, 3)
            assert (row["links"], row["monitored_by"]) == (1, 1)
            mine = await row_of(node, me.pid)
            assert (mine["links"], mine["monitors"]) == (1, 1)


async def test_info_reports_uptime_memory_loop_lag_and_ring() -> None:
    async with Node("n", listen=None) as node:
        await asyncio.sleep(0.3)  # one lag sample
        info = node.info()
        assert 0 <= info["uptime"] < 60 and info["memory"] > 1_000_000
        assert 0 <= info["loop_lag"] < 1.0
        assert info["ring"] == {"weights": {"n": 1}, "vnodes": 128}


async def test_a_supervised_function_child_registers_its_name_again_after_a_restart() -> None:
    async with Node("n", listen=None) as node:
        await node.start_supervisor([child(idle, name="idler")])
        first = node.whereis("idler")
        assert first is not None and node.is_alive(first)
        node.exit(first, "kill")
        for _ in range(200):
            again = node.whereis("idler")
            if again is not None and again != first:
                break
            await asyncio.sleep(0.01)
        assert again is not None and again != first and node.is_alive(again)
        assert node.info()["stats"]["supervisor_restarts"] == 1


async def test_a_supervised_function_child_whose_name_is_taken_fails_to_start() -> None:
    async with Node("n", listen=None) as node:
        await node.register("taken", node.spawn(idle))
        with pytest.raises(zmesh.CallError, match="taken"):
            await node.start_supervisor([child(idle, name="taken")])


async def scrape(url: str) -> tuple[str, str]:
    host, rest = url.removeprefix("http://").split(":", 1)
    port, path = rest.split("/", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /{path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.splitlines()[0], body


async def test_metrics_port_serves_counters_gauges_and_histograms() -> None:
    config = NodeConfig(metrics_port=0)
    async with Node("m", cookie=COOKIE, config=config) as a, Node("p", cookie=COOKIE) as b:
        await b.connect(a.address)  # type: ignore[arg-type]
        box = await a.start(Box)
        assert await b.call(box, "hi") == "hi"  # timed on b, not on a
        await a.call(box, "local")
        url = a.info()["metrics"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        status, body = await scrape(url)
        assert status == "HTTP/1.0 200 OK"
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert families["zmesh_processes"].samples[0].value == 1
        assert families["zmesh_peers"].samples[0].value == 1
        calls = families["zmesh_call_latency_seconds"]
        count = next(s for s in calls.samples if s.name.endswith("_count"))
        assert count.value == 1 and count.labels == {"node": "m"}
        ups = families["zmesh_node_events"].samples
        assert {s.labels["event"]: s.value for s in ups} == {"up": 1.0, "down": 0.0}
        sent = families["zmesh_peer_messages"].samples
        into_a = next(x for x in sent if x.labels == {"node": "m", "peer": "p", "direction": "in"})
        assert into_a.value >= 1
        status, _ = await scrape(url.replace("/metrics", "/other"))
        assert status.startswith("HTTP/1.0 404")
    with pytest.raises(OSError):  # the endpoint closed with the node
        await scrape(url)


def test_a_bad_metrics_port_is_refused() -> None:
    with pytest.raises(zmesh.ConfigError, match="metrics_port"):
        NodeConfig(metrics_port=70000)


async def test_a_metrics_port_in_use_is_a_config_error() -> None:
    async with Node("a", listen=None, config=NodeConfig(metrics_port=0)) as a:
        port = int(a.info()["metrics"].rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(zmesh.ConfigError, match=str(port)):
            async with Node("b", listen=None, config=NodeConfig(metrics_port=port)):
                pass


async def test_missing_prometheus_client_is_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zmesh.runtime import metrics

    monkeypatch.setattr(metrics, "_MISSING", True)
    with pytest.raises(zmesh.ConfigError, match=r"pip install 'zmesh\[metrics\]'"):
        async with Node("a", listen=None, config=NodeConfig(metrics_port=0)):
            pass


async def test_metrics_count_registry_operations_and_services() -> None:
    config = NodeConfig(metrics_port=0)
    async with Node("m", cookie=COOKIE, config=config) as a:
        pid = await a.start(Box)
        assert await a.register("box", pid)
        assert not await a.register("box", a.spawn(idle))  # taken: refused
        await a.unregister("box")
        await a.spawn_service("svc", Box)
        _, body = await scrape(a.info()["metrics"])
        families = {f.name: f for f in text_string_to_metric_families(body)}
        ops = {s.labels["op"]: s.value for s in families["zmesh_registry_operations"].samples}
        assert ops == {"registered": 2.0, "refused": 1.0, "unregistered": 1.0}
        assert families["zmesh_services"].samples[0].value == 1
        assert families["zmesh_services_here"].samples[0].value == 1


# -- many processes: info() holds the busiest, node_processes pages through all ---------------


async def test_a_node_with_more_processes_than_a_message_holds_lists_them_all_in_pages() -> None:
    small = NodeConfig(max_message_size=512 * 1024)  # 6,000 rows are about 1 MiB
    async with (
        Node("big", cookie=COOKIE, config=small) as big,
        Node("asker", cookie=COOKIE, config=small) as asker,
    ):
        await asker.connect(big.address)  # type: ignore[arg-type]
        pids = [big.spawn(idle) for _ in range(6000)]
        busy = pids[4321]
        for _ in range(3):
            big.send(busy, "queued")
        await asyncio.sleep(0)
        rows = await asker.node_processes("big", timeout=10)
        assert [r["pid"] for r in rows] == [str(p) for p in big.processes()]
        assert {str(p) for p in pids} <= {r["pid"] for r in rows}
        info = await asker.node_info("big", timeout=10)
        assert info["stats"]["processes"] >= 6000
        assert len(info["processes"]) == zmesh.runtime.inspect.INFO_PROCESS_ROWS
        assert str(busy) in {r["pid"] for r in info["processes"]}  # the busiest are kept
        assert await big.node_processes("big") == rows  # a node asked for its own
        for pid in pids:
            big.send(pid, "stop")


async def test_a_process_page_is_bounded_in_bytes_and_a_bad_start_is_refused() -> None:
    from zmesh.runtime.inspect import process_page

    async with Node("paged", cookie=COOKIE) as node:
        for _ in range(50):
            node.spawn(idle)
        await asyncio.sleep(0)
        pages, start = [], 0
        while start is not None:
            page = process_page(node, start, 1000)
            assert page["rows"] and page["total"] == len(node.processes())
            pages.append(page["rows"])
            start = page["next"]
        assert len(pages) > 5
        assert [r["pid"] for page in pages for r in page] == [str(p) for p in node.processes()]
        for bad in (-1, "0", None, 1.5):
            with pytest.raises(TypeError, match="index"):
                process_page(node, bad, 1000)


async def test_without_a_metrics_port_calls_are_not_timed() -> None:
    # Only the metrics endpoint reads call latency; nothing else pays for it.
    async with Node("m", cookie=COOKIE) as a:
        box = await a.start(Box)
        assert await a.call(box, "local") == "local"
        assert a._inspector is not None
        assert sum(a._inspector.call_histogram.counts) == 0
