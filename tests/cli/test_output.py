"""The CLI's printing helpers: strict JSON, tables with a header even when empty."""

from __future__ import annotations

import json
import math

import pytest
from zmesh.cli.output import Column, emit, to_json  # type: ignore[import-not-found,unused-ignore]

import zmesh


def test_to_json_makes_every_value_strict_json() -> None:
    pid = zmesh.Pid("n", 3, 7)
    value = {"t": (1, 2.5), "inf": math.inf, "nan": math.nan, 4: b"\x01", "pid": pid}
    out = to_json(value)
    assert out == {"t": [1, 2.5], "inf": "inf", "nan": "nan", "4": "01", "pid": str(pid)}
    json.dumps(out, allow_nan=False)


def test_an_empty_table_prints_its_header_and_none(capsys: pytest.CaptureFixture[str]) -> None:
    emit([], [Column("a", "ALPHA"), Column("b", "BETA")], as_json=False)
    lines = capsys.readouterr().out.split()
    assert lines[:2] == ["ALPHA", "BETA"] and lines[-1] == "none"
    emit([], [Column("a", "ALPHA")], as_json=True)
    assert capsys.readouterr().out == ""


def test_a_large_table_is_plain_aligned_text(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"a": f"x{i}", "n": i} for i in range(3000)]
    emit(rows, [Column("a", "A"), Column("n", "N", right=True)], as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3002 and lines[0].split() == ["A", "N"]
    assert lines[-1] == "x2999  2999" and lines[2] == "x0        0"
