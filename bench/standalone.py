"""One standalone server for the "direct" figures: ``python -m bench.standalone --port P``.

It serves the very module the cluster serves (``bench/app/bench_app.py``) on
aiohttp + uvloop, on its own loopback TCP port, with no balancer in front.
``--redis-url`` swaps in python-socketio's own ``AsyncRedisManager``, the
baseline that lets standalone servers broadcast to each other.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

__all__ = ["main"]

APP_DIR = Path(__file__).resolve().parent / "app"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standalone")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default="bench_app", help="module in bench/app/")
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args(argv)

    import socketio
    import uvloop
    from aiohttp import web

    sys.path.insert(0, str(APP_DIR))
    module = importlib.import_module(args.app)
    sio, app = module.sio, module.app
    if args.redis_url:
        manager = socketio.AsyncRedisManager(args.redis_url)
        sio.manager = manager
        manager.set_server(sio)
        sio.manager_initialized = False
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
