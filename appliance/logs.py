"""The manager's log: a timestamp (UTC, ISO 8601) and a level on every line, or JSON lines.

`appliance serve --log-format json` writes one JSON object a line (time, level, logger, message,
and the traceback when there is one) for journald or a log shipper. The access log (one line per
request: client, method, path, status) is off unless asked for with --access-log; it never holds a
header, so no token reaches it.
"""
from __future__ import annotations

import json
import logging
import sys
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(UtcFormatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=True)


def configure(log_format: str = "text", level: int = logging.INFO, access_log: bool = False) -> dict:
    """Set the root handler for our loggers and uvicorn's; returns uvicorn's log_config."""
    formatter = JsonFormatter() if log_format == "json" else UtcFormatter(TEXT_FORMAT)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if access_log else logging.WARNING)
    # uvicorn must not install its own handlers over ours.
    return {"version": 1, "disable_existing_loggers": False}
