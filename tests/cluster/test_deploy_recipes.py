"""The recipes in docs/deploy.md, rehearsed without docker or Kubernetes: each container
or pod is a network namespace ("host") at the address the recipe gives it, running the
recipe's own `zmesh join` arguments and environment (read from the YAML in the doc),
and each command the reader is told to type runs as the doc spells it, in the host it
names. Kubernetes' DNS is a stub server answering the headless Service's name with the
pods' addresses, named by each pod's resolv.conf as a cluster's DNS would be.
Not exercised: building the image, and the orchestrators themselves.

Skipped (with the reason) unless run as root on a machine that allows `ip netns`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import netns
import pytest
from dns_stub import DnsStub
from joined import Joined, start_join

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text()
UNAVAILABLE = netns.unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))


def block(lang: str, first_line: str) -> str:
    """The fenced `lang` block of docs/deploy.md whose first line is `first_line`."""
    for body in re.findall(rf"```{lang}\n(.*?)```", DOC, re.S):
        if body.startswith(first_line):
            return str(body)
    raise AssertionError(f"no ```{lang} block starting {first_line!r} in docs/deploy.md")


def commands_after(first_line: str) -> list[list[str]]:
    """The lines of the ```sh block following the block that starts with `first_line`."""
    body = re.search(r"```sh\n(.*?)```", DOC[DOC.index(first_line) :], re.S)
    assert body is not None
    return [shlex.split(line, comments=True) for line in body.group(1).splitlines() if line]


@pytest.fixture
def image_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the image provides: examples/ importable (its ENV PYTHONPATH) and the
    installed `zmesh` command on PATH."""
    examples = str(ROOT / "examples")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([examples, os.environ["PYTHONPATH"]]))
    bin_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join([bin_dir, os.environ["PATH"]]))


def run_in(host: netns.Host, argv: list[str], env: dict[str, str]) -> str:
    """Run a command the doc gives (`zmesh ...`, `sh -c ...`) on `host`; its stdout."""
    done = subprocess.run(
        [*host.exec, *argv], capture_output=True, text=True, timeout=30,
        env=dict(os.environ, **env),
    )  # fmt: skip
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout


async def eventually(check: Callable[[], str], timeout: float = 20.0) -> str:
    """`check()` once it stops raising AssertionError (it blocks: a subprocess)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.3)


async def listed(
    host: netns.Host, argv: list[str], env: dict[str, str], ips: dict[str, str]
) -> str:
    """`zmesh nodes` output once it shows every name of `ips` with its advertised address."""

    def attempt() -> str:
        out = run_in(host, argv, env)
        for name, ip in ips.items():
            assert re.search(rf"(?m)^{re.escape(name)}\s+tcp://{re.escape(ip)}:7000\b", out), (
                name, out)  # fmt: skip
        return out

    return await eventually(attempt)


async def answered(host: netns.Host, argv: list[str], env: dict[str, str]) -> str:
    """The output of a command that fails until the cluster is ready (a `zmesh call`)."""
    return await eventually(lambda: run_in(host, argv, env))


@pytest.fixture
def compose() -> Iterator[tuple[netns.Network, dict[str, Any]]]:
    spec = yaml.safe_load(block("yaml", "# compose.yaml"))
    network = netns.Network(spec["networks"]["mesh"]["ipam"]["config"][0]["subnet"])
    try:
        yield network, spec
    finally:
        network.close()


@pytest.mark.timeout(150)
@pytest.mark.usefixtures("image_env")
async def test_the_compose_recipe_forms_a_cluster_and_keeps_the_count_when_a_node_stops(
    compose: tuple[netns.Network, dict[str, Any]],
) -> None:
    network, spec = compose
    env = dict(spec["x-node"]["environment"])
    hosts: dict[str, netns.Host] = {}
    joined: dict[str, Joined] = {}
    counts: list[int] = []
    try:
        for argv in commands_after("# compose.yaml"):
            assert argv[:2] == ["docker", "compose"], argv
            verb, service, command = argv[2], (argv[3:4] or [""])[0], argv[4:]
            if verb == "up":
                for name, service_spec in spec["services"].items():
                    ip = service_spec["networks"]["mesh"]["ipv4_address"]
                    hosts[name] = network.host(name, routed=True, ip=ip)
                    node, *args = service_spec["command"]
                    joined[name] = start_join(
                        node, env["ZMESH_COOKIE"], *args, prefix=hosts[name].exec
                    )
            elif verb == "exec" and command[:2] == ["zmesh", "nodes"]:
                up = {n: h.ip for n, h in hosts.items() if joined[n].proc.poll() is None}
                await listed(hosts[service], command, env, up)
            elif verb == "exec" and command[:2] == ["zmesh", "call"]:
                call = (hosts[service], command)
                counts.append(int(await answered(*call, env)))
            elif verb == "stop":
                assert joined[service].stop() == 0
            else:
                raise AssertionError(f"a command this rehearsal does not know: {argv}")
        # After the stop: the same call once more, and the count has carried on.
        counts.append(int(run_in(*call, env)))
        assert counts == [1, 2]
    finally:
        for node in joined.values():
            node.stop()


@pytest.fixture
def cluster_network() -> Iterator[netns.Network]:
    network = netns.Network()
    try:
        yield network
    finally:
        network.close()


def pod_env(container: dict[str, Any], pod: str, ip: str, secret: str) -> dict[str, str]:
    """The container's `env`, as the kubelet fills it in (downward API, `$(VAR)`)."""
    env: dict[str, str] = {}
    fields = {"metadata.name": pod, "metadata.namespace": "default", "status.podIP": ip}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "fieldRef" in item["valueFrom"]:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            assert item["valueFrom"]["secretKeyRef"] == {"name": "zmesh-cookie", "key": "cookie"}
            env[item["name"]] = secret
    return env


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], text)


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("image_env")
async def test_the_kubernetes_recipe_finds_pods_by_dns_and_a_deleted_pod_again_at_a_new_ip(
    cluster_network: netns.Network,
) -> None:
    service, statefulset = yaml.safe_load_all(block("yaml", "# zmesh.yaml"))
    assert service["spec"]["clusterIP"] == "None"  # headless: the name resolves to pod IPs
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    base = statefulset["metadata"]["name"]
    dns_name = f"{service['metadata']['name']}.default.svc.cluster.local"
    records: dict[str, list[str]] = {dns_name: []}
    stub = DnsStub(records, cluster_network.gateway)
    secret = os.urandom(16).hex()
    pods: dict[str, tuple[netns.Host, Joined, dict[str, str]]] = {}
    created = 0

    def schedule(pod: str) -> None:
        """A pod (re)created: a new host with a new IP, in the Service's record."""
        nonlocal created
        host = cluster_network.host(f"p{created}", routed=True)
        created += 1
        host.resolv_conf(
            "search default.svc.cluster.local svc.cluster.local cluster.local\n"
            f"nameserver {cluster_network.gateway}\noptions ndots:5\n"
        )
        records[dns_name].append(host.ip)
        env = pod_env(container, pod, host.ip, secret)
        name, *args = (expand(a, env) for a in container["args"])
        pods[pod] = (host, start_join(name, secret, *args, prefix=host.exec, env=env), env)

    def ips() -> dict[str, str]:
        return {pod: host.ip for pod, (host, _, _) in pods.items()}

    try:
        for argv in commands_after("# zmesh.yaml"):
            assert argv[0] == "kubectl", argv
            if argv[1:3] == ["create", "secret"]:
                continue  # the cookie: `secret` above
            if argv[1] == "apply":
                for i in range(statefulset["spec"]["replicas"]):
                    schedule(f"{base}-{i}")
            elif argv[1] == "exec":
                pod, command = argv[2], argv[argv.index("--") + 1 :]
                host, _, env = pods[pod]
                if command[:2] == ["zmesh", "nodes"]:
                    await listed(host, command, env, ips())
                elif command[:2] == ["zmesh", "call"]:
                    assert int(await answered(host, command, env)) == 1
                else:
                    raise AssertionError(f"a command this rehearsal does not know: {argv}")
            elif argv[1:3] == ["delete", "pod"]:
                host, node, _ = pods.pop(argv[3])
                assert node.stop() == 0, node.output()
                records[dns_name].remove(host.ip)
                schedule(argv[3])  # the StatefulSet recreates it, elsewhere
                zero_host, _, zero_env = pods[f"{base}-0"]
                nodes_cmd = ["zmesh", "nodes", "--seed", "tcp://127.0.0.1:7000"]
                await listed(zero_host, nodes_cmd, zero_env, ips())
            else:
                raise AssertionError(f"a command this rehearsal does not know: {argv}")
        assert created == statefulset["spec"]["replicas"] + 1
        assert stub.queries  # the pods did ask the Service's name
    finally:
        for _, node, _ in pods.values():
            node.stop()
        stub.close()
