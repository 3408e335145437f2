"""Starting and signalling worker processes: the only place that touches them.

Workers are started in a fresh interpreter (``python -P -m worker``), never by
forking a master that already runs an event loop and sockets.  ``-P`` keeps
the current directory off ``sys.path`` until the worker itself adds it for the
user's app, so a user module named like ours cannot shadow the worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

__all__ = ["WorkerProcess", "spawn_worker"]


@dataclass
class WorkerProcess:
    popen: subprocess.Popen[bytes]
    control: socket.socket  # the master's end of the control socketpair
    handoff: socket.socket  # the master's end of the SOCK_SEQPACKET pair for client fds
    pidfd: int  # readable when the process exits

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, signum: int) -> None:
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def poll(self) -> int | None:
        return self.popen.poll()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        self.control.close()
        self.handoff.close()


def spawn_worker(*, cwd: str, cpu: int | None = None) -> WorkerProcess:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    h_parent, h_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        popen = subprocess.Popen(
            [sys.executable, "-P", "-m", "worker",
             "--control-fd", str(child.fileno()), "--handoff-fd", str(h_child.fileno())],
            pass_fds=(child.fileno(), h_child.fileno()),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    finally:
        child.close()
        h_child.close()
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(popen.pid, {cpu})
    parent.setblocking(False)
    h_parent.setblocking(False)
    return WorkerProcess(
        popen=popen, control=parent, handoff=h_parent, pidfd=os.pidfd_open(popen.pid)
    )
