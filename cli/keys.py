"""`zmesh keygen`: make a node's CurveZMQ certificate pair."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

import zmesh

from .common import fail


def keygen(
    directory: Annotated[str, typer.Argument(help="Where to write the key files.")],
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="The node's name (default: host name)."),
    ] = None,
) -> None:
    """Write DIR/NAME.key (public: copy it into the allow-list of every node that may
    accept this one) and DIR/NAME.key_secret (mode 0600). Never overwrites a key."""
    name = name or socket.gethostname().split(".")[0]
    try:
        public, secret = zmesh.keygen(directory, name)
    except zmesh.ZmeshError as exc:
        fail(str(exc))
    print(f"zmesh: wrote {public} and {secret}", flush=True)
