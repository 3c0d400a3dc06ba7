"""CurveZMQ over real loopback sockets: listed keys mesh, everything else is refused with
no application frame accepted, the wire carries no payload in the clear, and
authentication fails closed (a stopped ZAP handler refuses, a revoked key is cut off)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
import zmesh_test_app as app
import zmq

import zmesh
from zmesh.runtime import dist as dist_module
from zmesh.runtime.curve import KeyPair, load_keypair, parse_address

from ..conftest import COOKIE

MARKER = b"PAYLOAD-IN-THE-CLEAR-0123456789"


@pytest.fixture
def keys(tmp_path: Path) -> Callable[..., zmesh.Curve]:
    """`curve(name, allow=None)`: keys for a..e in tmp/keys; a, b, c on tmp/allow."""
    for name in ("a", "b", "c", "d", "e"):
        zmesh.keygen(tmp_path / "keys", name)
    allow = tmp_path / "allow"
    allow.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(tmp_path / "keys" / f"{name}.key", allow)

    def curve(name: str, allow_: str | list[str] | None = None) -> zmesh.Curve:
        return zmesh.Curve(tmp_path / "keys" / f"{name}.key_secret", allow_ or str(allow))

    return curve


@pytest.fixture
async def curved(keys: Callable[..., zmesh.Curve]) -> AsyncIterator[tuple[zmesh.Node, zmesh.Node]]:
    async with (
        zmesh.Node("a", cookie=COOKIE, curve=keys("a")) as a,
        zmesh.Node("b", cookie=COOKIE, curve=keys("b")) as b,
    ):
        assert await b.connect(f"a@{a.address}") == "a"
        yield a, b


async def exchange(a: zmesh.Node, b: zmesh.Node) -> None:
    """a and b exchange messages both ways."""
    async with b.process() as me:
        echo = a.spawn(app.echo)
        b.send(echo, (me.pid, "ping"))
        assert await me.receive(timeout=3) == ("echo", "ping")


def app_frames(node: zmesh.Node) -> int:
    """Frames the node accepted from trusted peers (any application traffic)."""
    return sum(s["frames_in"] for s in node.peer_stats().values())


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# -- keys and configuration -------------------------------------------------------------------


def test_keygen_writes_a_bound_pair_and_never_overwrites(tmp_path: Path) -> None:
    public, secret = zmesh.keygen(tmp_path, "alpha")
    assert public == tmp_path / "alpha.key" and secret == tmp_path / "alpha.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pair = load_keypair(secret)
    assert pair.name == "alpha"
    assert zmq.auth.load_certificate(public) == (pair.public, None)
    with pytest.raises(zmesh.ConfigError, match="refusing to overwrite"):
        zmesh.keygen(tmp_path, "alpha")


def test_a_secret_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    _, secret = zmesh.keygen(tmp_path, "alpha")
    secret.chmod(0o640)
    with pytest.raises(zmesh.ConfigError, match="chmod 600"):
        load_keypair(secret)


async def test_a_node_must_be_named_after_its_key(keys: Callable[..., zmesh.Curve]) -> None:
    with pytest.raises(zmesh.ConfigError, match="bound to the name 'a'"):
        async with zmesh.Node("zz", cookie=COOKIE, curve=keys("a")):
            pass


def test_name_at_address_is_split_at_the_last_at_before_the_scheme() -> None:
    assert parse_address("b@tcp://1.2.3.4:5") == ("b", "tcp://1.2.3.4:5")
    assert parse_address("x@host@tcp://h:5") == ("x@host", "tcp://h:5")
    assert parse_address("tcp://h:5") == (None, "tcp://h:5")
    assert parse_address("ipc:///tmp/a@b") == (None, "ipc:///tmp/a@b")


# -- listed keys -------------------------------------------------------------------------------


async def test_listed_keys_mesh_and_exchange_messages(
    curved: tuple[zmesh.Node, zmesh.Node], keys: Callable[..., zmesh.Curve]
) -> None:
    a, b = curved
    await exchange(a, b)
    await exchange(b, a)
    # Peers of peers connect by the names gossip gives their addresses.
    async with zmesh.Node("c", cookie=COOKIE, curve=keys("c")) as c:
        await c.connect(f"b@{b.address}")
        await wait_for(lambda: c.nodes() == ["a", "b"] and a.nodes() == ["b", "c"])
        await exchange(a, c)


async def test_a_plain_address_needs_the_name_under_curve(
    curved: tuple[zmesh.Node, zmesh.Node],
) -> None:
    a, b = curved
    unknown = a.address.replace("127.0.0.1", "localhost")
    with pytest.raises(zmesh.ConnectError, match="NAME@") as err:
        await b.connect(unknown)
    assert err.value.reason == "security"
    assert await b.connect(a.address) == "a"  # known from the session: a plain one works


# -- refusals ----------------------------------------------------------------------------------


async def test_an_unlisted_key_is_refused(
    curved: tuple[zmesh.Node, zmesh.Node], keys: Callable[..., zmesh.Curve], tmp_path: Path
) -> None:
    a, b = curved
    before = app_frames(a)
    own = [str(tmp_path / "allow" / "a.key"), str(tmp_path / "keys" / "d.key")]
    async with zmesh.Node("d", cookie=COOKIE, curve=keys("d", own)) as d:
        with pytest.raises(zmesh.ConnectError, match="refused our CURVE key") as err:
            await d.connect(f"a@{a.address}", timeout=3)
        assert err.value.reason == "security"
    assert a.stats()["zap_unlisted_keys"] >= 1
    assert a.nodes() == ["b"] and app_frames(a) - before < 50  # b's heartbeats only
    await exchange(a, b)


async def test_a_wrong_server_key_never_connects(
    curved: tuple[zmesh.Node, zmesh.Node], keys: Callable[..., zmesh.Curve]
) -> None:
    a, _ = curved
    async with zmesh.Node("c", cookie=COOKIE, curve=keys("c")) as c:
        with pytest.raises(zmesh.ConnectError, match="wrong server key") as err:
            await c.connect(f"b@{a.address}", timeout=2)  # b's key expected at a's address
        assert err.value.reason == "security"
        assert c.nodes() == []
    assert "c" not in a.nodes()


async def test_a_plain_node_and_a_curve_node_cannot_talk_either_way(
    curved: tuple[zmesh.Node, zmesh.Node],
) -> None:
    a, _ = curved
    async with zmesh.Node("c", cookie=COOKIE) as plain:
        with pytest.raises(zmesh.ConnectError, match="security mismatch") as err:
            await plain.connect(a.address, timeout=3)  # the plain side cannot be told more
        assert err.value.reason == "security"
        with pytest.raises(zmesh.ConnectError, match="security mismatch"):
            await a.connect(f"c@{plain.address}", timeout=3)
        assert plain.nodes() == [] and "c" not in a.nodes()


async def test_a_null_mechanism_client_gets_no_frame_through(
    curved: tuple[zmesh.Node, zmesh.Node],
) -> None:
    a, b = curved
    before = dict(a.stats())
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(a.address)
    for _ in range(20):
        sock.send(b"\x92\x00\x00")
    await asyncio.sleep(0.3)
    sock.close(0)
    ctx.term()
    after = a.stats()
    # Nothing reached the node at all: not even a refused-frame counter moved.
    moved = {k for k in after if k != "processes" and after.get(k) != before.get(k)}
    assert not {k for k in moved if "frame" in k or "handshake" in k or "unauth" in k}
    await exchange(a, b)


async def test_a_listed_key_presenting_another_name_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    curved: tuple[zmesh.Node, zmesh.Node],
    keys: Callable[..., zmesh.Curve],
) -> None:
    a, b = curved
    real = load_keypair

    def lying(path: object) -> KeyPair:  # c's key, under whatever name the node has
        pair = real(path)  # type: ignore[arg-type]
        return KeyPair(pair.public, pair.secret, "b")

    monkeypatch.setattr(dist_module, "load_keypair", lying)
    before = app_frames(a)
    async with zmesh.Node("b", cookie=COOKIE, curve=keys("c")) as impostor:
        with pytest.raises(zmesh.ConnectError) as err:
            await impostor.connect(f"a@{a.address}", timeout=3)
        assert err.value.reason in ("name_clash", "security")
        assert "bound to the name 'c'" in str(err.value) or "key of" in str(err.value)
    assert a.stats()["curve_wrong_names"] >= 1
    assert a.nodes() == ["b"] and a.peer_stats()["b"]["frames_in"] > 0
    assert app_frames(a) - before < 50
    await exchange(a, b)


async def test_a_frame_without_a_curve_identity_is_dropped(
    curved: tuple[zmesh.Node, zmesh.Node],
) -> None:
    a, _ = curved
    dist = a._dist
    assert dist is not None
    # What a fail-open connection would deliver: no User-Id. Refused before decoding.
    dist._on_frame(b"\x01" * 16, [b"anything"], None)
    dist._on_frame(b"\x01" * 16, [b"anything"], "e")  # a key name not on the list
    assert a.stats()["curve_unauthenticated"] == 2


# -- fail closed -------------------------------------------------------------------------------


async def test_a_stopped_zap_handler_refuses_new_peers(
    curved: tuple[zmesh.Node, zmesh.Node], keys: Callable[..., zmesh.Curve]
) -> None:
    a, b = curved
    transport = a._dist._transport  # type: ignore[union-attr]
    assert transport is not None and transport.zap is not None
    transport.zap.close()
    async with zmesh.Node("c", cookie=COOKIE, curve=keys("c")) as c:
        with pytest.raises(zmesh.ConnectError) as err:
            await c.connect(f"a@{a.address}", timeout=3)
        assert err.value.reason == "security"
        assert "c" not in a.nodes()
    await exchange(a, b)  # established sessions are unaffected


async def test_a_revoked_key_is_disconnected_and_refused(
    curved: tuple[zmesh.Node, zmesh.Node], keys: Callable[..., zmesh.Curve], tmp_path: Path
) -> None:
    a, b = curved
    async with zmesh.Node("c", cookie=COOKIE, curve=keys("c")) as c:
        await c.connect(f"a@{a.address}")
        await wait_for(lambda: a.nodes() == ["b", "c"])
        (tmp_path / "allow" / "c.key").unlink()
        # Both a and b see the file change (shared directory) and cut c off.
        await wait_for(lambda: a.nodes() == ["b"] and b.nodes() == ["a"], timeout=5)
        assert a.stats()["curve_revoked"] == 1
        async with a.process() as me:
            c.send(me.pid, "after revocation")
            with pytest.raises(zmesh.ReceiveTimeout):
                await me.receive(timeout=0.5)
        await wait_for(lambda: c.nodes() == [], timeout=5)  # c hears nothing more
        with pytest.raises(zmesh.ConnectError):
            await c.connect(f"a@{a.address}", timeout=2)
        assert a.nodes() == ["b"]
    assert a.reload_allow_list() == []
    await exchange(a, b)


# -- the wire ----------------------------------------------------------------------------------


class Relay:
    """A TCP relay to `target` that records every byte it forwards."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.seen = bytearray()
        self.server: asyncio.AbstractServer | None = None
        self.address = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    self.seen += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.parametrize("encrypted", [True, False], ids=["curve", "plain"])
async def test_no_payload_crosses_the_wire_in_the_clear(
    encrypted: bool, keys: Callable[..., zmesh.Curve]
) -> None:
    async with (
        zmesh.Node("a", cookie=COOKIE, curve=keys("a") if encrypted else None) as a,
        zmesh.Node("b", cookie=COOKIE, curve=keys("b") if encrypted else None) as b,
    ):
        relay = Relay(a.address)
        await relay.start()
        try:
            await b.connect(f"a@{relay.address}")
            async with a.process() as me:
                for i in range(20):
                    b.send(me.pid, (MARKER, i))
                for i in range(20):
                    assert await me.receive(timeout=3) == (MARKER, i)
        finally:
            await relay.close()
    assert len(relay.seen) > 500
    # The plain run proves the relay carried the traffic; the CURVE run hides it.
    assert (MARKER in relay.seen) is (not encrypted)


# -- abuse -------------------------------------------------------------------------------------


def raw_tcp(address: str) -> socket.socket:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


async def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `sock` (fails if it stays open `seconds`)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sock.setblocking(False)
    while loop.time() - start < seconds:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            await asyncio.sleep(0.02)
            continue
        except ConnectionError:
            return loop.time() - start
        if not data:
            return loop.time() - start
    raise AssertionError(f"connection still open after {seconds} s")


GREETING_NULL = (
    b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL" + b"\x00" * 16 + b"\x00" + b"\x00" * 31
)
GREETING_CURVE = (
    b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"CURVE" + b"\x00" * 15 + b"\x00" + b"\x00" * 31
)


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 4,
        GREETING_NULL + b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER",
        # A CURVE greeting, then a long frame declaring 1 GiB instead of a HELLO command.
        GREETING_CURVE + b"\x06" + (1 << 30).to_bytes(8, "big") + b"\x00" * 1000,
        b"",  # a client that connects and never finishes the handshake
    ],
    ids=["garbage", "null-mechanism", "1GiB-declared", "silent"],
)
async def test_abuse_is_closed_within_the_handshake_interval(
    curved: tuple[zmesh.Node, zmesh.Node], payload: bytes
) -> None:
    a, b = curved
    rss_before = psutil.Process().memory_info().rss
    socks = [raw_tcp(a.address) for _ in range(10)]
    for sock in socks:
        if payload:
            sock.sendall(payload)
    took = await asyncio.gather(*(closed_within(s, 4.0) for s in socks))
    for sock in socks:
        sock.close()
    assert max(took) < 3.0  # HANDSHAKE_IVL is 2 s
    # Memory stays bounded: nothing near a declared 1 GiB (x10 clients) is allocated.
    assert psutil.Process().memory_info().rss - rss_before < 64 * 1024 * 1024
    await exchange(a, b)
