"""Printing results: a table for people, or `--json` (one object per line) for scripts.

A table command is a list of row dicts and a list of `Column`s: `emit(rows, columns,
as_json=...)`. JSON rows carry every key of the row dict, whatever the table shows.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

import zmesh

#: Above this many rows a table is printed as plain aligned text: rich measures every
#: cell, which costs about 1 s per 10,000 rows.
PLAIN_ROWS = 2000


@dataclass(frozen=True)
class Column:
    """One table column: the row key it shows, its header, how a value is written."""

    key: str
    header: str
    fmt: Callable[[Any], str] = lambda v: "-" if v is None else str(v)
    right: bool = False


def console(stderr: bool = False) -> Console:
    """A console that does not wrap or truncate when the output is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(file=stream, width=None if tty else 10_000, highlight=False, soft_wrap=not tty)


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    as_json: bool,
    title: str | None = None,
) -> None:
    """Print `rows`: JSON lines, or a table with a header ("none" under it if empty)."""
    if as_json:
        for row in rows:
            print_json(row)
        return
    if len(rows) > PLAIN_ROWS:
        _plain(rows, columns)
        return
    table = Table(
        box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, show_edge=False
    )
    for col in columns:
        table.add_column(col.header, justify="right" if col.right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(col.fmt(row.get(col.key)) for col in columns))
    out = console()
    out.print(table)
    if not rows:
        out.print("none")


def _plain(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    cells = [[col.fmt(row.get(col.key)) for col in columns] for row in rows]
    widths = [len(col.header) for col in columns]
    for line in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]

    def fit(values: Iterable[str]) -> str:
        parts = (
            v.rjust(w) if col.right else v.ljust(w)
            for v, w, col in zip(values, widths, columns, strict=True)
        )
        return "  ".join(parts).rstrip()

    out = [fit(col.header for col in columns), fit("-" * w for w in widths)]
    out.extend(fit(line) for line in cells)
    sys.stdout.write("\n".join(out) + "\n")


def print_json(value: Any) -> None:
    """One line of strict JSON (see `to_json` for what is converted)."""
    sys.stdout.write(json.dumps(to_json(value), allow_nan=False, ensure_ascii=False) + "\n")


def to_json(value: Any) -> Any:
    """`value` as JSON can hold it: tuples become lists, dict keys strings, pids and refs
    `str(pid)`, bytes their hex, and non-finite floats the strings "inf", "-inf", "nan"
    (JSON has no Infinity)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(to_json(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, zmesh.Pid | zmesh.Ref):
        return str(value)
    return repr(value)


def human_seconds(value: Any) -> str:
    """12.3 -> "12s", 4000 -> "1h06m"."""
    if value is None:
        return "-"
    s = int(value)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def human_bytes(value: Any) -> str:
    """12345678 -> "11.8 MiB"."""
    if value is None:
        return "-"
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def millis(value: Any) -> str:
    """0.0123 -> "12.3 ms"."""
    return "-" if value is None else f"{float(value) * 1000:.1f} ms"
