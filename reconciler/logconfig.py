"""Logging setup for the command line: plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Attributes every LogRecord has; anything else was passed through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Send the package's logs to standard error at ``level`` in ``fmt``.

    Raises:
        ValueError: an unknown level or format.
    """
    if level.lower() not in LEVELS:
        msg = f"unknown log level {level!r}; use one of {', '.join(LEVELS)}"
        raise ValueError(msg)
    if fmt not in ("text", "json"):
        msg = f"unknown log format {fmt!r}; use text or json"
        raise ValueError(msg)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level.lower()])
    # httpx logs every request at INFO; the adapters log what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # stamina logs each retry too; the adapters' own retry lines give more detail.
    logging.getLogger("stamina").setLevel(logging.ERROR)
