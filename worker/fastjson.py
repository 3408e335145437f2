"""msgspec as the JSON module of python-socketio and python-engineio in a worker.

python-socketio and python-engineio encode and decode every packet with
their ``json`` module (``AsyncServer(json=...)``; by default
``engineio.json``, the standard library's ``json`` with a guard against
integers of more than 100 digits).  Profiling ws-echo in a worker put the
standard library's JSON at about 8% of the worker's CPU, half of it in
building a ``JSONDecoder`` per call for that guard.  This module is a drop-in
``json`` module on msgspec (already a dependency), used unless the app passed
its own (:func:`worker.libcontract.install_json`).

Theory of operation: a fast path, and the standard one for everything else,
so the answers are those of ``engineio.json`` except where noted below.

* :func:`loads`: text with a run of more than 100 digits, keyword arguments,
  and anything msgspec refuses (``NaN``, lone surrogates, ``1e400``...) go to
  ``engineio.json.loads``, which gives the same result or raises the same
  ``ValueError``.  The rest is decoded by msgspec, which yields the same
  Python values (ints, floats, str, list, dict, last duplicate key wins).
* :func:`dumps`: with the compact separators the libraries use for packets,
  msgspec; any other keyword arguments, and anything msgspec refuses
  (lone surrogates, ints beyond 64 bits...), the standard library.

Differences from the standard library, all on output, all what JavaScript's
``JSON.stringify`` does: non-ASCII text is written as UTF-8, not ``\\uXXXX``
escapes (same string once parsed, fewer bytes); ``NaN`` and infinities
become ``null`` (the standard library writes ``NaN``, which no JSON parser
accepts); and values the standard library refuses with ``TypeError`` but
msgspec encodes (``set``, ``datetime``, ``UUID``, dataclasses...) are
encoded.  An app that needs the standard library's exact output passes
``json=json`` to ``socketio.AsyncServer``, and siocluster leaves it alone.
"""

from __future__ import annotations

import json as _std
import re
from typing import Any

import msgspec
from engineio import json as _eio_json

__all__ = ["dumps", "loads"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_COMPACT = (",", ":")
# engineio.json refuses integers of more than 100 digits (int() of a long
# string is quadratic); such text takes its path.
_LONG_DIGITS = re.compile(r"\d{101}")


def dumps(obj: Any, **kwargs: Any) -> str:
    if kwargs.get("separators") == _COMPACT and len(kwargs) == 1:
        try:
            return _encode(obj).decode()
        except Exception:  # msgspec refuses it: the standard library says what it says
            pass
    return _std.dumps(obj, **kwargs)


def loads(s: str | bytes, **kwargs: Any) -> Any:
    if not kwargs and _LONG_DIGITS.search(s if isinstance(s, str) else s.decode(
            "utf-8", "replace")) is None:
        try:
            return _decode(s)
        except msgspec.DecodeError:
            pass
    return _eio_json.loads(s, **kwargs)
