"""The worker's garbage collector, tuned for churning sessions.

Every Engine.IO session leaves reference cycles behind (python-engineio's
socket and its queue, aiohttp's request and protocol, asyncio's tasks and
futures): measured in a worker under a connect storm, about 70 objects per
session that only the cyclic collector frees.  With Python's default
threshold (700 allocations) the youngest generation is collected about every
10 sessions, each collection promotes the in-flight sessions' objects, and the
full collections that follow walk every object the app and its libraries
loaded: 13-15% of a worker's CPU, the same in a standalone python-socketio
server.

Two settings from ``[cluster]``, as long-running Python servers are tuned by
hand (Instagram's, which gave Python ``gc.freeze``; gunicorn issue #1640 for
preloaded apps).  Python's documentation of ``gc.freeze`` names both uses:
copy-on-write after ``fork`` and faster collections, the one taken here:

* ``gc_threshold`` (default 10,000; 0 keeps Python's): the youngest
  generation is collected less often, so most cycles die young and far fewer
  in-flight objects are promoted to be walked again later;
* ``gc_freeze`` (default on): once the app is loaded and started, its objects
  (modules, classes, the app itself) move to the permanent generation, so full
  collections stop walking them.  They were never garbage: a frozen object is
  only kept alive, never leaked by this.

Nothing is left uncollected: the older generations keep Python's thresholds,
and the soak (``python -m bench --soak``) checks that memory stays flat.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_loaded", "tune"]


def tune(threshold: int) -> None:
    """The youngest generation's threshold; 0 keeps Python's."""
    if threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)


def freeze_loaded(freeze: bool) -> None:
    """Collect what loading left behind, then freeze the rest (see the docstring)."""
    if freeze:
        gc.collect()
        gc.freeze()
