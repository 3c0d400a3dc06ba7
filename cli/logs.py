"""Log output for `zmesh join`: one line per event, for people ("human") or as JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Final

FORMATS: Final = ("human", "json")
LEVELS: Final = ("debug", "info", "warning", "error")


class HumanFormatter(logging.Formatter):
    """`HH:MM:SS level logger: message`, one line; a traceback only at debug level."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if not self.tracebacks and record.exc_info:
            record = logging.makeLogRecord(record.__dict__)
            record.exc_info = None
            record.exc_text = None
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, message, and exc
    (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(log_format: str, level: str) -> None:
    """Send zmesh's logs to stderr in `log_format` ("human" or "json") from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(HumanFormatter(tracebacks=level == "debug"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
