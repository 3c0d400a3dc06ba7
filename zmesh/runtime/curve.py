"""CurveZMQ for zmesh: node keys, the allow-list and a ZAP handler that fails closed.

A node's certificate pair is pyzmq's format (`zmq.auth.create_certificates`):
`NAME.key` holds the public key, `NAME.key_secret` both keys (mode 0600). The
metadata line `name = NAME` binds the key to a node name; a certificate without it
is bound to its file name (`NAME.key`). The allow-list is a directory of public
certificates (or a list of files): only those keys may connect, each only under its
own name.

Failing closed: the ROUTER sets ZAP_DOMAIN and ZAP_ENFORCE_DOMAIN, so while no ZAP
handler answers (not started yet, stopped, crashed) libzmq refuses every client
instead of admitting it. The handler admits a key only if it is on the allow-list,
and tells libzmq the key's node name as the connection's User-Id; the node checks
that User-Id on every inbound frame (a second line of defence).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.utils.z85

from zmesh.errors import ConfigError

log = logging.getLogger("zmesh.curve")

#: The ZAP domain of every zmesh ROUTER; the handler answers only this one.
ZAP_DOMAIN = "zmesh"
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_NAME_LINE = re.compile(rb"^\s+name\s*=\s*\"?([^\"\r\n]+?)\"?\s*$")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Curve:
    """Encrypt and authenticate every connection with CurveZMQ.

    `secret_key_file` is this node's `NAME.key_secret` (made by `zmesh keygen`);
    `allow` a directory of public certificates (`*.key`) or a list of such files:
    the nodes that may connect, each bound to its name. The allow-list is re-read
    when its files change (and on `Node.reload_allow_list()`); a key taken off it is
    disconnected and refused from then on.
    """

    secret_key_file: PathLike
    allow: PathLike | Sequence[PathLike]

    def key_name(self) -> str:
        """The node name this node's key is bound to (a node must be named after it)."""
        return load_keypair(self.secret_key_file).name


@dataclass(frozen=True, slots=True)
class KeyPair:
    """This node's CURVE keys (z85) and the name its certificate binds them to."""

    public: bytes
    secret: bytes
    name: str


def keygen(directory: PathLike, name: str) -> tuple[Path, Path]:
    """Write `NAME.key` and `NAME.key_secret` (mode 0600) in `directory`; the paths.

    Raises ConfigError if either file exists (keys are never overwritten)."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"invalid key name {name!r}: use the node's name")
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise ConfigError(f"{path} exists: refusing to overwrite a key (remove it first)")
    folder.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)  # the secret is never readable by others, not even briefly
    import zmq.auth  # only here and in _load: a node without CURVE does not load it

    try:
        zmq.auth.create_certificates(folder, name, metadata={"name": name})
    finally:
        os.umask(old)
    # pyzmq writes metadata into the secret file only; the public one binds the name too.
    text = public.read_text()
    public.write_text(text.replace("metadata\n", f"metadata\n    name = {name}\n", 1))
    secret.chmod(0o600)
    public.chmod(0o644)
    return public, secret


def load_keypair(path: PathLike) -> KeyPair:
    """This node's keys from its `.key_secret` file; ConfigError if unreadable or shared."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the CURVE secret key {file}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the CURVE secret key {file} is readable by group or others: chmod 600 {file}"
        )
    public, secret = _load(file)
    if secret is None:
        raise ConfigError(f"{file} holds no secret key: pass the NAME.key_secret file")
    return KeyPair(public, secret, _cert_name(file))


class AllowList:
    """The public keys that may connect, each bound to one node name; re-readable."""

    def __init__(self, source: PathLike | Sequence[PathLike]) -> None:
        if isinstance(source, str | os.PathLike):
            self._dir: Path | None = Path(source)
            self._files: list[Path] = []
            if not self._dir.is_dir():
                raise ConfigError(f"the allow-list {self._dir} is not a directory")
        else:
            self._dir = None
            self._files = [Path(p) for p in source]
        self.by_key: dict[bytes, str] = {}
        self.by_name: dict[str, bytes] = {}
        self._signature: object = None
        self.reload()

    def _paths(self) -> list[Path]:
        if self._dir is not None:
            return sorted(self._dir.glob("*.key"))
        return list(self._files)

    def signature(self) -> object:
        """What changes when the listed files change (names, sizes, times)."""
        out = []
        for path in self._paths():
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def changed(self) -> bool:
        """Whether the files changed since the last read."""
        return self.signature() != self._signature

    def reload(self) -> set[str]:
        """Re-read the files; the names that are no longer listed (or changed key).

        A file that cannot be read, or a second key claiming a name, is a ConfigError
        at the first load; on a reload it is logged and the old list kept."""
        signature = self.signature()
        by_key: dict[bytes, str] = {}
        by_name: dict[str, bytes] = {}
        try:
            for path in self._paths():
                public, _ = _load(path)
                name = _cert_name(path)
                if name in by_name and by_name[name] != public:
                    raise ConfigError(f"two keys claim the name {name!r} ({path})")
                by_key[public] = name
                by_name[name] = public
        except ConfigError as exc:
            if self._signature is None:
                raise
            log.error("allow-list not reloaded, keeping the old one: %s", exc)
            self._signature = signature
            return set()
        gone = {n for n, k in self.by_name.items() if by_name.get(n) != k}
        self.by_key, self.by_name, self._signature = by_key, by_name, signature
        return gone


class ZapHandler:
    """Answers libzmq's ZAP requests on the event loop: CURVE keys on the allow-list, in
    domain `zmesh`, are admitted with their node name as User-Id; all else is refused.

    `on_refused(reason, detail)` is called for each refusal (to count and log it).
    Closing the handler unbinds its endpoint: libzmq then refuses every new client
    (ZAP_ENFORCE_DOMAIN)."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        allow: AllowList,
        on_refused: Callable[[str, str], None],
    ) -> None:
        self._allow = allow
        self._on_refused = on_refused
        self._loop = asyncio.get_running_loop()
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(_ZAP_ENDPOINT)
        self._sock: zmq.Socket[bytes] | None = sock
        self._fd = int(sock.getsockopt(zmq.FD))
        self._loop.add_reader(self._fd, self._drain)
        self._loop.call_soon(self._drain)  # edge-triggered: catch what came first

    @property
    def running(self) -> bool:
        return self._sock is not None

    def _drain(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                request = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.warning("ZAP receive failed: %s", exc)
                return
            sock.send_multipart(self._answer(request))

    def _answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6:
            self._on_refused("zap_malformed", f"a {len(request)}-part ZAP request")
            return [b"1.0", request[1] if len(request) > 1 else b"", b"400", b"malformed", b"", b""]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]

        def no(reason: str, text: bytes) -> list[bytes]:
            key = credentials[0] if len(credentials) == 1 and len(credentials[0]) == 32 else b""
            shown = zmq.utils.z85.encode(key).decode() if key else "-"
            peer = address.decode(errors="replace")
            self._on_refused(reason, f"{peer} ({mechanism.decode(errors='replace')} key {shown})")
            return [b"1.0", request_id, b"400", text, b"", b""]

        if version != b"1.0" or domain != ZAP_DOMAIN.encode():
            return no("zap_bad_domain", b"unknown domain")
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            return no("zap_not_curve", b"CURVE required")
        name = self._allow.by_key.get(zmq.utils.z85.encode(credentials[0]))
        if name is None:
            return no("zap_unlisted_keys", b"key not allowed")
        return [b"1.0", request_id, b"200", b"OK", name.encode(), b""]

    def close(self) -> None:
        """Stop answering; from now on libzmq refuses new clients."""
        if self._sock is not None:
            self._loop.remove_reader(self._fd)
            self._sock.close(0)
            self._sock = None


def parse_address(spec: str) -> tuple[str | None, str]:
    """Split `NAME@tcp://HOST:PORT` into (NAME, address); (None, spec) without a name.

    Node names may contain "@" themselves: the name ends at the last "@" before "://"."""
    scheme = spec.find("://")
    head = spec[:scheme] if scheme > 0 else ""
    if "@" not in head:
        return None, spec
    name, transport = head.rsplit("@", 1)
    return (name or None), transport + spec[scheme:]


def _load(path: Path) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the certificate {path}: {exc}") from None


def _cert_name(path: Path) -> str:
    """The node name a certificate binds its key to: metadata `name`, else the file's."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the certificate {path}: {exc}") from None
    section = b""
    for line in lines:
        if line and not line[:1].isspace():
            section = line.strip()
        elif section == b"metadata":
            match = _NAME_LINE.match(line)
            if match:
                return match.group(1).decode()
    return path.name.split(".key")[0]
