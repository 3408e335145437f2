"""A separate process that emits with python-socketio's own write-only managers.

    python emitter_proc.py redis URL CHANNEL '[{"event": ..., "data": ..., ...}, ...]'
    python emitter_proc.py redis-sync URL CHANNEL '[...]'     (socketio.RedisManager)
    python emitter_proc.py amqp URL CHANNEL '[...]'
    python emitter_proc.py kombu URL CHANNEL '[...]'          (socketio.KombuManager)

Each item is passed to ``manager.emit(**item)`` as is (``data`` lists with
``"multi": true`` become a tuple: several arguments).  Prints ``SENT n``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import socketio


async def main(kind: str, url: str, channel: str, items: list[dict[str, Any]]) -> None:
    manager: Any
    if kind in ("redis-sync", "kombu"):
        sync: Any
        if kind == "kombu":
            sync = socketio.KombuManager(url, channel=channel, write_only=True)
        else:
            sync = socketio.RedisManager(url, channel=channel, write_only=True)
        for item in items:
            if item.pop("multi", False):
                item["data"] = tuple(item["data"])
            sync.emit(item.pop("event"), item.pop("data", None), **item)
        print(f"SENT {len(items)}", flush=True)
        return
    if kind == "redis":
        manager = socketio.AsyncRedisManager(url, channel=channel, write_only=True)
    else:
        manager = socketio.AsyncAioPikaManager(url, channel=channel, write_only=True)
    for item in items:
        if item.pop("multi", False):
            item["data"] = tuple(item["data"])
        event = item.pop("event")
        await manager.emit(event, item.pop("data", None), **item)
    if kind == "amqp" and manager.publisher_connection is not None:
        await manager.publisher_connection.close()
    print(f"SENT {len(items)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
