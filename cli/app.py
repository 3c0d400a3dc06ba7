"""The `zmesh` command: `join` runs a node; the others look into a running cluster.

Each command lives in the module of its kind; this one only registers them. A new
table command is a function that gathers rows and calls `output.emit` (see
`inspection.py`), plus one line below.
"""

from __future__ import annotations

import typer

from . import inspection, join, keys, shell, top

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Erlang-style distribution for Python: run and inspect zmesh nodes.",
)

app.command()(join.join)
app.command()(keys.keygen)
app.command()(inspection.nodes)
app.command()(inspection.ps)
app.command()(inspection.info)
app.command()(inspection.whereis)
app.command()(inspection.call)
app.command()(inspection.send)
app.command()(inspection.ring)
app.command()(inspection.services)
app.command()(top.top)
app.command()(shell.shell)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
