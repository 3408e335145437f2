"""Raise the open-file limit, for the generator and the servers it starts.

10,000 idle websockets need 10,000 fds in the generator, as many in the
servers, and twice as many in a master that relays them.  Root may raise the
hard limit too; anyone else gets the hard limit they have.
"""

from __future__ import annotations

import contextlib
import resource

__all__ = ["WANTED_NOFILE", "nofile_limit", "raise_nofile"]

WANTED_NOFILE = 65_536


def raise_nofile(wanted: int = WANTED_NOFILE) -> int:
    """Set RLIMIT_NOFILE as high as allowed, up to ``wanted``; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return int(soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return int(soft)


def nofile_limit() -> int:
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
