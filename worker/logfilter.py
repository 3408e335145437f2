"""Tracebacks a client causes become one counted, rate-limited line.

python-engineio logs a full traceback (about 20 lines) for every malformed
packet a client sends: a bad polling payload, an empty or unknown WebSocket
packet, Socket.IO packets with broken JSON.  One client sending garbage in a
loop would flood the worker's log, the "traceback storm" an operator learns
nothing from.  aiohttp does the same when such an error escapes the
WebSocket handler.

:func:`caused_by_client` tells those apart from real bugs: the exception is
one a decoder raises on bad input (ValueError and its kin), and *no* frame of
its traceback is the app's code, only the libraries' and the standard
library's.  An exception raised in a handler the app wrote keeps its
traceback: that is a bug to fix, not input to shrug at.

:class:`ClientErrorFilter` rewrites such a record to one warning line
(``malformed input from a client: ValueError: ...``), counts it, and lets at
most ``burst`` lines through, then ``rate_per_s`` a second; the next line
that passes says how many were left out.  The count reaches /metrics
(``siocluster_guard_events_total{kind="malformed_input"}``).

:func:`unify_library_logging` removes the bare StreamHandler python-engineio
and python-socketio attach to their loggers when an app builds a server, so
their records go through the worker's own formatter once, not twice.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType

from balancer.ratelimit import TokenBucket

__all__ = ["ClientErrorFilter", "caused_by_client", "install_client_error_filter",
           "unify_library_logging"]

# Packages whose frames are "library" frames; with the standard library's.
_LIBRARIES = frozenset({"engineio", "socketio", "aiohttp", "multidict", "yarl", "msgspec",
                        "worker", "balancer", "supervisor", "uvloop", "uvicorn", "httptools",
                        "websockets", "wsproto", "starlette", "fastapi", "anyio"})
_INPUT_ERRORS = (ValueError, TypeError, IndexError, KeyError, UnicodeError)
# Where python-engineio, python-socketio, aiohttp and uvicorn log what a request raised.
_LOGGERS = ("engineio.server", "socketio.server", "aiohttp.server", "uvicorn.error")


def _library_frame(module: str) -> bool:
    top = module.partition(".")[0]
    return top in _LIBRARIES or top in sys.stdlib_module_names


def caused_by_client(exc: BaseException | None, tb: TracebackType | None) -> bool:
    if not isinstance(exc, _INPUT_ERRORS) or tb is None:
        return False
    while tb is not None:
        if not _library_frame(str(tb.tb_frame.f_globals.get("__name__", ""))):
            return False
        tb = tb.tb_next
    return True


class ClientErrorFilter(logging.Filter):
    def __init__(
        self,
        *,
        rate_per_s: float = 1.0,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.count = 0
        self._bucket = TokenBucket(rate_per_s, burst)
        self._clock = clock
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None:
            return True
        _, exc, tb = record.exc_info
        if not caused_by_client(exc, tb):
            return True
        self.count += 1
        if not self._bucket.take(self._clock()):
            self._left_out += 1
            return False
        summary = f"{type(exc).__name__}: {str(exc)[:120]}"
        if self._left_out:
            summary += f" ({self._left_out} more like it not logged)"
            self._left_out = 0
        what = record.getMessage()
        record.msg, record.args = "malformed input from a client (%s): %s", (what, summary)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_client_error_filter() -> ClientErrorFilter:
    """One filter on every logger that logs request errors; returns it (for its count)."""
    shared = ClientErrorFilter()
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(shared)
    return shared


def unify_library_logging() -> None:
    """Drop the formatter-less StreamHandlers the libraries add for themselves."""
    for name in ("engineio.server", "socketio.server"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler and handler.formatter is None:
                logger.removeHandler(handler)
