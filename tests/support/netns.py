"""Hosts made of Linux network namespaces, for tests where addresses must really differ.

`Network()` makes a bridge in the root namespace on a private /24 (10.77.X.0/24, X
picked free at random), at `.1`; `network.host("a")` a namespace joined to it by a
veth pair, its `eth0` at `.2`, `.3`, ...; every host binds the same ports, as
separate machines do. `network.close()` removes everything it made (namespaces,
links, `/etc/netns/NS`), and is safe to call twice. Needs root and `ip netns`:
`unavailable()` says why not, for a skip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"znprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` refused: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    bridge = _ip("link", "add", probe, "type", "bridge", check=False)
    if bridge.returncode != 0:
        return f"cannot make a bridge: {bridge.stderr.strip()}"
    _ip("link", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One namespace: `ip` is its address on the network, `exec` the command prefix."""

    ns: str
    link: str  # the root-side end of its veth pair
    ip: str

    @property
    def exec(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns)

    def resolv_conf(self, text: str) -> None:
        """What `/etc/resolv.conf` reads inside this host (bind-mounted by `ip netns exec`)."""
        folder = Path("/etc/netns") / self.ns
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "resolv.conf").write_text(text)


class Network:
    """A bridge in the root namespace and the hosts on it; see the module docstring."""

    def __init__(self, subnet: str | None = None) -> None:
        self.prefix = f"zn{os.getpid() % 1000}{random.randrange(16**3):03x}"
        self.bridge = f"{self.prefix}br"
        self.subnet = _free_subnet() if subnet is None else ipaddress.IPv4Network(subnet)
        self.gateway = str(self.subnet.network_address + 1)
        self.hosts: list[Host] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def host(self, name: str, *, routed: bool = False, ip: str | None = None) -> Host:
        """A new namespace on the network at `ip` (default: the next free one from `.2`);
        with `routed`, its default route is the bridge (so it has a routable address),
        else it knows only the subnet. `name` is short: it ends interface names."""
        if ip is None:
            taken = {h.ip for h in self.hosts}
            ip = next(str(a) for a in self.subnet.hosts() if str(a) not in taken | {self.gateway})
        host = Host(f"{self.prefix}{name}", f"{self.prefix}{name}", ip)
        self.hosts.append(host)
        _ip("netns", "add", host.ns)
        _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
        _ip("link", "set", host.link, "master", self.bridge, "up")
        _ip("-n", host.ns, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", host.ns, "link", "set", "eth0", "up")
        _ip("-n", host.ns, "link", "set", "lo", "up")
        if routed:
            _ip("-n", host.ns, "route", "add", "default", "via", self.gateway)
        return host

    def cut(self, host: Host) -> None:
        """Partition `host` from everyone: its cable is unplugged (packets are lost,
        nothing is reset), until `mend`."""
        _ip("link", "set", host.link, "down")

    def mend(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def close(self) -> None:
        for host in self.hosts:
            _ip("netns", "del", host.ns, check=False)  # takes its veth pair with it
            _ip("link", "del", host.link, check=False)
            shutil.rmtree(Path("/etc/netns") / host.ns, ignore_errors=True)
        _ip("link", "del", self.bridge, check=False)
        self.hosts = []
        with contextlib.suppress(OSError):  # only if empty: another run may be using it
            Path("/etc/netns").rmdir()


def _free_subnet() -> ipaddress.IPv4Network:
    used = _ip("-4", "addr").stdout + _ip("-4", "route").stdout
    for _ in range(100):
        subnet = ipaddress.IPv4Network(f"10.77.{random.randrange(1, 255)}.0/24")
        if f"10.77.{subnet.network_address.packed[2]}." not in used:
            return subnet
    raise RuntimeError("no free 10.77.X.0/24 subnet")
