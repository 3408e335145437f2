"""``python -m worker --control-fd N``: the entry point the master spawns."""

from __future__ import annotations

import argparse
import signal
import sys

import uvloop

from .main import run_worker


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--handoff-fd", type=int, default=None)
    args = parser.parse_args()
    # Ctrl-C reaches the whole process group; the master decides how workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return uvloop.run(run_worker(args.control_fd, args.handoff_fd))


if __name__ == "__main__":
    sys.exit(main())
