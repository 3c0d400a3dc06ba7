"""The terminal, driven as a user drives it: `zmesh` subprocesses against a real
cluster of three `zmesh join` nodes (shared by the module), `zmesh top` under a
pseudo-terminal, /metrics scraped over HTTP."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from joined import Joined, start_join
from prometheus_client.parser import text_string_to_metric_families

COOKIE = "cli-cookie"
ENV = dict(os.environ, ZMESH_COOKIE=COOKIE, COLUMNS="200")


def zmesh_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmesh", *args],
        capture_output=True, text=True, timeout=30, env=ENV, input=stdin,
    )  # fmt: skip


def json_lines(out: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cli:
    nodes: list[Joined]
    metrics_port: int

    @property
    def seed(self) -> tuple[str, str]:
        return ("--seed", self.nodes[0].address)

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return zmesh_cli(*args, *self.seed, stdin=stdin)


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    """c1 (serving metrics), c2 and c3 joined to c1; on c3 a Counter named "answer"
    (41) and one named "big" (float infinity); on c2 nothing."""
    port = free_port()
    c1 = start_join("c1", COOKIE, "--metrics-port", str(port))
    nodes = [c1]
    try:
        nodes += [start_join(n, COOKIE, "--seed", c1.address) for n in ("c2", "c3")]
        cli = Cli(nodes, port)
        deadline = time.monotonic() + 20
        while True:
            rows = json_lines(cli.run("nodes", "--json"))
            if [r["name"] for r in rows] == ["c1", "c2", "c3"] and all(
                len(r["peers"]) == 2
                for r in rows  # type: ignore[arg-type]
            ):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        code = (
            "await node.start('zmesh_test_app:Counter', 41, name='answer', on='c3'); "
            "await node.start('zmesh_test_app:Counter', float('inf'), name='big', on='c3')"
        )
        out = cli.run("shell", "-c", code)
        assert out.returncode == 0, out.stderr
        yield cli
    finally:
        for node in nodes:
            node.stop()


def test_nodes_lists_every_member_with_its_figures(cli: Cli) -> None:
    rows = json_lines(cli.run("nodes", "--json"))
    assert [r["name"] for r in rows] == ["c1", "c2", "c3"]
    for row in rows:
        assert set(row) == {"name", "address", "incarnation", "uptime", "processes", "peers"}
        assert row["address"] == next(n.address for n in cli.nodes if n.name == row["name"])
    table = cli.run("nodes")
    assert table.returncode == 0
    assert table.stdout.split()[:6] == [
        "NODE",
        "ADDRESS",
        "INCARNATION",
        "UPTIME",
        "PROCS",
        "PEERS",
    ]
    firsts = [line.split()[0] for line in table.stdout.splitlines() if line.strip()]
    assert {"c1", "c2", "c3"} <= set(firsts)


def test_ps_asks_every_member_and_names_registered_servers(cli: Cli) -> None:
    rows = json_lines(cli.run("ps", "--json"))
    by_name = {r["name"]: r for r in rows}
    answer = by_name["answer"]
    assert answer["node"] == "c3" and str(answer["pid"]).startswith("<c3.")
    assert answer["function"] == "zmesh_test_app:Counter"
    assert {"node", "pid", "name", "function", "messages", "received", "links", "monitors",
            "monitored_by"} <= set(answer)  # fmt: skip
    table = cli.run("ps")
    assert "answer" in table.stdout and "zmesh_test_app:Counter" in table.stdout


def test_ps_with_no_processes_prints_a_header_and_none(cli: Cli) -> None:
    out = cli.run("ps", "--node", "c2")
    assert out.returncode == 0
    assert out.stdout.split()[:2] == ["NODE", "PID"] and out.stdout.split()[-1] == "none"
    assert cli.run("ps", "--node", "c2", "--json").stdout == ""
    missing = cli.run("ps", "--node", "nowhere")
    assert missing.returncode == 1 and "nowhere" in missing.stderr


def test_info_shows_one_node_and_exits_1_for_an_unknown_one(cli: Cli) -> None:
    (row,) = json_lines(cli.run("info", "c3", "--json"))
    assert row["name"] == "c3" and row["processes"] == 2
    assert row["memory"] > 1_000_000 and 0 <= row["loop_lag"] < 1  # type: ignore[operator]
    assert row["registered"] == ["answer", "big"] and row["peers"] == ["c1", "c2"]
    assert isinstance(row["stats"], dict)
    assert "loop_lag" in cli.run("info", "c3").stdout
    out = cli.run("info", "c9")
    assert out.returncode == 1 and "c9" in out.stderr and len(out.stderr.splitlines()) == 1


def test_whereis_prints_the_pid_or_exits_1(cli: Cli) -> None:
    out = cli.run("whereis", "answer")
    assert out.returncode == 0 and out.stdout.startswith("<c3.")
    assert json_lines(cli.run("whereis", "answer", "--json"))[0]["node"] == "c3"
    out = cli.run("whereis", "nobody")
    assert out.returncode == 1 and "nobody" in out.stderr


def test_call_sends_json_and_prints_strict_json(cli: Cli) -> None:
    before = int(cli.run("call", "answer", '"get"').stdout)
    assert int(cli.run("call", "answer", '"increment"').stdout) == before + 1
    (row,) = json_lines(cli.run("call", "answer", '"get"', "--json"))
    assert row == {"name": "answer", "reply": before + 1}
    big = cli.run("call", "big", '"get"')
    assert big.returncode == 0 and json.loads(big.stdout) == "inf"  # JSON has no Infinity


def test_call_refuses_a_request_that_is_not_json(cli: Cli) -> None:
    out = cli.run("call", "answer", "{bad json")
    assert out.returncode == 2 and "not JSON" in out.stderr and out.stdout == ""
    out = cli.run("call", "nobody", '"get"')
    assert out.returncode == 1 and "nobody" in out.stderr


def test_send_delivers_to_a_registered_process(cli: Cli) -> None:
    def received() -> int:
        rows = json_lines(cli.run("ps", "--json", "--node", "c3"))
        return int(next(r["received"] for r in rows if r["name"] == "big"))  # type: ignore[call-overload]

    before = received()
    out = cli.run("send", "big", '["hello", 1]')
    assert out.returncode == 0 and "big" in out.stdout
    deadline = time.monotonic() + 5
    while received() != before + 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_ring_shows_members_and_key_owners(cli: Cli) -> None:
    rows = json_lines(cli.run("ring", "--json"))
    assert [r["node"] for r in rows] == ["c1", "c2", "c3"]
    assert abs(sum(float(r["share"]) for r in rows) - 1.0) < 0.01  # type: ignore[arg-type]
    (owner,) = json_lines(cli.run("ring", "--key", "user:1", "--json"))
    assert owner["key"] == "user:1" and owner["node"] in ("c1", "c2", "c3")


def test_services_lists_where_each_service_runs(cli: Cli) -> None:
    empty = cli.run("services")
    assert empty.returncode == 0 and "SERVICE" in empty.stdout and "none" in empty.stdout
    spawn = "(await node.spawn_service('tally', 'zmesh_test_app:DistributedCounter', 0)).node"
    out = cli.run("shell", "-c", spawn)
    assert out.returncode == 0, out.stderr
    owner = out.stdout.strip().strip("'")
    assert owner in ("c1", "c2", "c3")  # never the shell's hidden node
    (row,) = json_lines(cli.run("services", "--json"))
    assert row["name"] == "tally" and row["node"] == owner
    assert row["server"] == "zmesh_test_app:DistributedCounter" and row["restart"] == "permanent"
    assert json_lines(cli.run("call", "tally", '"increment"', "--json"))[0]["reply"] == 1
    stop = cli.run("shell", "-c", "await node.stop_service('tally')")
    assert stop.returncode == 0, stop.stderr
    assert json_lines(cli.run("services", "--json")) == []


def test_shell_runs_code_with_node_bound_and_prints_the_result(cli: Cli) -> None:
    out = cli.run("shell", "-c", "x = await node.call('answer', 'get'); x - x + 7")
    assert out.returncode == 0 and out.stdout.strip() == "7", out.stderr
    out = cli.run("shell", "-c", "await node.call('nobody', 'get')")
    assert out.returncode == 1 and "NoProc" in out.stderr
    session = cli.run("shell", stdin="sorted(node.nodes())\nawait node.call('answer', 'where')\n")
    assert session.returncode == 0
    assert "['c1', 'c2', 'c3']" in session.stdout and "'c3'" in session.stdout


def test_metrics_are_served_in_prometheus_text_format(cli: Cli) -> None:
    url = f"http://127.0.0.1:{cli.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    peers = families["zmesh_peers"].samples[0]
    assert peers.labels == {"node": "c1"} and peers.value >= 2
    assert families["zmesh_node_events"].type == "counter"
    ups = [s for s in families["zmesh_node_events"].samples if s.labels.get("event") == "up"]
    assert ups and ups[0].value >= 2
    lag = families["zmesh_loop_lag_seconds"]
    assert lag.type == "histogram"
    count = next(s for s in lag.samples if s.name == "zmesh_loop_lag_seconds_count")
    assert count.value > 0
    for name in ("zmesh_processes", "zmesh_mailbox_backlog", "zmesh_call_latency_seconds",
                 "zmesh_handshakes_refused", "zmesh_frames_refused", "zmesh_supervisor_restarts",
                 "zmesh_peer_messages", "zmesh_peer_bytes", "zmesh_memory_bytes"):  # fmt: skip
        assert name in families, name


def test_top_refreshes_under_a_terminal_and_quits_on_q(cli: Cli) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmesh", "top", *cli.seed, "--interval", "0.3"],
        stdin=slave, stdout=slave, stderr=slave, env=dict(ENV, TERM="xterm"),
        start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while seen.count(b"zmesh top:") < 3 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 65536)
        assert seen.count(b"zmesh top:") >= 3, seen[-2000:]
        os.write(master, b"q")
        assert proc.wait(timeout=10) == 0
        seen += drain(master)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    screen = seen.decode(errors="replace")
    assert all(name in screen for name in ("c1", "c2", "c3", "answer"))
    assert "\x1b[?1049h" in screen and screen.rstrip().endswith("\x1b[?1049l")  # screen restored


def drain(fd: int) -> bytes:
    """What is left to read on a pty whose child has exited (reads end with EIO)."""
    out = b""
    try:
        while select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    return out


def test_join_with_a_wrong_cookie_says_so_once_and_keeps_retrying(cli: Cli) -> None:
    cmd = [sys.executable, "-m", "zmesh", "join", "intruder", "--listen", "tcp://127.0.0.1:0",
           *cli.seed, "--cookie", "wrong", "--log-format", "json"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # several retries (every 0.5 s)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "node intruder up" in out
    refusals = [line for line in err.splitlines() if line.startswith("zmesh:")]
    assert len(refusals) == 1 and "cookie" in refusals[0] and cli.nodes[0].address in refusals[0]
    for line in err.splitlines():  # everything else is a JSON log line
        if not line.startswith("zmesh:"):
            assert set(json.loads(line)) >= {"ts", "level", "logger", "message"}


def test_join_under_a_name_a_live_node_holds_exits_2_naming_the_holder(cli: Cli) -> None:
    holder = cli.nodes[1]
    cmd = [sys.executable, "-m", "zmesh", "join", holder.name, "--listen", "tcp://127.0.0.1:0",
           *cli.seed]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=ENV)
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert repr(holder.name) in line and holder.address in line


def test_an_unreachable_seed_exits_2_naming_it() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    out = zmesh_cli("nodes", "--seed", address)
    assert out.returncode == 2 and address in out.stderr and "--seed" in out.stderr


def test_a_wrong_cookie_is_reported_clearly(cli: Cli) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "zmesh", "nodes", *cli.seed, "--cookie", "bad"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2 and "cookie" in out.stderr


def test_ps_lists_every_process_of_a_node_that_runs_more_than_one_message_holds(cli: Cli) -> None:
    """80,000 rows are about 9.6 MB, past the 8 MiB a message may carry: `ps` pages
    through them while `nodes` and `info` stay small. Last in the module: c1 keeps them."""
    spawn = "await node.spawn_remote('c1', 'zmesh_test_app:crowd', 80000)"
    assert cli.run("shell", "-c", spawn).returncode == 0
    deadline = time.monotonic() + 30
    while json_lines(cli.run("nodes", "--json"))[0]["processes"] < 80001:  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.5)
    rows = json_lines(cli.run("ps", "--json", "--node", "c1"))
    assert len(rows) >= 80001 and len({r["pid"] for r in rows}) == len(rows)
    assert sum(r["function"] == "zmesh_test_app:idle" for r in rows) == 80000
    info = json_lines(cli.run("info", "c1", "--json"))[0]
    assert info["processes"] >= 80001  # type: ignore[operator]
