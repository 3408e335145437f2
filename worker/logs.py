"""Logging setup shared by the master and the workers.

Every line carries the role (``master`` or ``worker``), the worker slot where
there is one, and the pid.  ``format = "json"`` writes one JSON object a line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["configure_logging"]


class _TextFormatter(logging.Formatter):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} [{self._tag} pid={os.getpid()}] {record.levelname.lower()} {record.name}: "
        line += record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def __init__(self, role: str, slot: int | None) -> None:
        super().__init__()
        self._role = role
        self._slot = slot

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "role": self._role,
            "slot": self._slot,
            "pid": os.getpid(),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _DropClientErrors(logging.Filter):
    """aiohttp logs a full traceback for every malformed request it answers 400;
    a 10-byte bad request line must not cost a kilobyte of log (and a log flood)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


def configure_logging(level: str, fmt: str, *, role: str, slot: int | None = None) -> None:
    tag = role if slot is None else f"{role} {slot}"
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        _JsonFormatter(role, slot) if fmt == "json" else _TextFormatter(tag)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is on the hot path; it is enabled by [logging] access_log only.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_DropClientErrors())
