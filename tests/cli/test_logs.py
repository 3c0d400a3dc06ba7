"""`zmesh join --log-format`: one line per event, for people or as JSON."""

from __future__ import annotations

import json
import logging

from zmesh.cli.logs import HumanFormatter, JsonFormatter  # type: ignore[import-not-found,unused-ignore]


def record(exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("zmesh.dist", logging.WARNING, "f", 1, "a: %s", ("b",), exc_info)


def test_json_lines_carry_time_level_logger_message_and_traceback() -> None:
    entry = json.loads(JsonFormatter().format(record(exc=True)))
    assert entry["level"] == "warning" and entry["logger"] == "zmesh.dist"
    assert entry["message"] == "a: b" and entry["ts"].endswith("Z")
    assert "RuntimeError: boom" in entry["exc"]
    assert "\n" not in JsonFormatter().format(record(exc=True))


def test_human_lines_are_one_line_per_event_unless_debugging() -> None:
    line = HumanFormatter(tracebacks=False).format(record(exc=True))
    assert "\n" not in line and line.endswith("WARNING zmesh.dist: a: b")
    assert "RuntimeError" in HumanFormatter(tracebacks=True).format(record(exc=True))
