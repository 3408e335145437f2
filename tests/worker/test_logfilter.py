from __future__ import annotations

import logging
import sys
from types import TracebackType

import pytest
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from worker.logfilter import ClientErrorFilter, caused_by_client, unify_library_logging

ExcInfo = tuple[type[BaseException], BaseException, TracebackType]


def _raised(fn: object, *args: object) -> ExcInfo:
    """What a library that catches ``fn``'s exception logs: the traceback from
    the call into the library on (this module's frames, the caller's, left out)."""
    try:
        fn(*args)  # type: ignore[operator]
    except Exception:
        kind, exc, tb = sys.exc_info()
        assert kind is not None and exc is not None and tb is not None
        while tb.tb_next is not None and tb.tb_frame.f_globals["__name__"] == __name__:
            tb = tb.tb_next
        return kind, exc, tb
    raise AssertionError("did not raise")


def _app_handler(data: str) -> None:
    raise ValueError(f"the app's own bug with {data}")


def test_decoder_errors_on_bad_packets_are_the_clients() -> None:
    for fn, arg in ((eio_packet.Packet, ""), (eio_packet.Packet, "x1"),
                    (sio_packet.Packet, '2["echo"'), (sio_packet.Packet, "2x-")):
        _, exc, tb = _raised(lambda a, f=fn: f(encoded_packet=a), arg)
        assert caused_by_client(exc, tb), (arg, exc)


def test_the_apps_own_errors_keep_their_traceback() -> None:
    _, exc, tb = _raised(_app_handler, "x")
    assert not caused_by_client(exc, tb)
    _, exc, tb = _raised(lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert not caused_by_client(exc, tb)
    assert not caused_by_client(None, None)


def _record(info: ExcInfo | None, msg: str = "post request handler error") -> logging.LogRecord:
    return logging.LogRecord("engineio.server", logging.ERROR, __file__, 1, msg, None, info)


def test_filter_shrinks_counts_and_rate_limits() -> None:
    now = [0.0]
    client_errors = ClientErrorFilter(rate_per_s=1.0, burst=3, clock=lambda: now[0])
    bad = _raised(lambda: eio_packet.Packet(encoded_packet=""))
    passed = [r for r in (_record(bad) for _ in range(5)) if client_errors.filter(r)]
    assert len(passed) == 3 and client_errors.count == 5
    first = passed[0]
    assert first.exc_info is None and first.levelno == logging.WARNING
    assert first.getMessage().startswith(
        "malformed input from a client (post request handler error): ValueError:")
    now[0] = 1.0
    later = _record(bad)
    assert client_errors.filter(later)
    assert "(2 more like it not logged)" in later.getMessage()


def test_filter_leaves_everything_else_alone() -> None:
    client_errors = ClientErrorFilter()
    plain = _record(None, "hello")
    app_bug = _record(_raised(_app_handler, "y"))
    assert client_errors.filter(plain) and client_errors.filter(app_bug)
    assert app_bug.exc_info is not None and app_bug.levelno == logging.ERROR
    assert client_errors.count == 0


@pytest.fixture
def engineio_logger() -> logging.Logger:
    logger = logging.getLogger("engineio.server")
    saved = list(logger.handlers)
    yield logger
    logger.handlers[:] = saved


def test_unify_removes_only_the_bare_handler(engineio_logger: logging.Logger) -> None:
    bare = logging.StreamHandler()
    configured = logging.StreamHandler()
    configured.setFormatter(logging.Formatter("%(message)s"))
    engineio_logger.handlers[:] = [bare, configured]
    unify_library_logging()
    assert engineio_logger.handlers == [configured]
