"""Loaded by `zmesh join --load zmesh_probe_app` in tests: reports on the process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import zmesh

#: Libraries of the command-line parser, which a running node should not hold.
PARSER_LIBRARIES = ("typer", "click", "rich", "pydantic", "pydantic_core")


async def parser_modules(proc: zmesh.Process, reply_to: zmesh.Pid) -> None:
    """Send `reply_to` the parser libraries imported in this OS process."""
    loaded = sorted(name for name in PARSER_LIBRARIES if name in sys.modules)
    proc.node.send(reply_to, ("parser_modules", loaded))


#: A self-signed certificate for "localhost" and 127.0.0.1 (valid until 2126) and its key.
TLS_FILES = Path(__file__).parent / "tls"


def openssl_mapped() -> bool:
    """Whether OpenSSL's libraries are mapped into this OS process (Linux)."""
    maps = Path("/proc/self/maps").read_text()
    return "libssl" in maps or "libcrypto" in maps


async def tls_state(proc: zmesh.Process, reply_to: zmesh.Pid) -> None:
    """Send `reply_to` whether `ssl` is imported and OpenSSL mapped in this OS process."""
    proc.node.send(reply_to, ("tls_state", "ssl" in sys.modules, openssl_mapped()))


async def tls_echo(proc: zmesh.Process, reply_to: zmesh.Pid) -> None:
    """Import `ssl` now, echo a line over an asyncio TLS connection on loopback, and send
    `reply_to` the line that came back and the protocol version."""
    import ssl

    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(TLS_FILES / "cert.pem", TLS_FILES / "key.pem")
    client = ssl.create_default_context(cafile=str(TLS_FILES / "cert.pem"))

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client, server_hostname="localhost"
    )
    writer.write(b"over tls\n")
    line = await reader.readline()
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    server.close()
    proc.node.send(reply_to, ("tls_echo", line, version))
