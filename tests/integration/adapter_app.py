"""A worker-like process for the adapter's integration tests.

Runs a python-socketio ``AsyncServer`` on aiohttp + uvloop on a TCP port, with
sids minted like a real worker's and ``install_adapter`` called before it
listens, exactly as ``worker/server.py`` does; no balancer, so tests pin
clients to workers by port.  Prints ``READY <node>`` on stdout once serving.

The test driver acts through ``POST /op`` (JSON in, JSON out): each op calls
one public python-socketio or adapter method on this worker.  Socket.IO event
handlers and server-side handlers give clients and peers something to call.

    python adapter_app.py --slot 0 --generation 1 --port 8100 \
        --runtime-dir /tmp/x --backend local [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import os
from typing import Any

import socketio
import uvloop
from aiohttp import web

from balancer.sid import mint_sid
from supervisor.config import config_from_dict
from worker.adapter import RequestTimeout, install_adapter

__all__ = ["main"]


def _b(value: Any) -> Any:
    """JSON has no bytes: ``{"b64": ...}`` stands for them in both directions."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return [_b(v) for v in value]
    if isinstance(value, dict):
        return {k: _b(v) for k, v in value.items()}
    return value


def _data(op: dict[str, Any]) -> Any:
    data = _b(op.get("data"))
    return tuple(data) if op.get("multi") else data


def _sock(info: Any) -> dict[str, Any]:
    return {"id": info.id, "rooms": list(info.rooms), "node": info.node,
            "auth": info.handshake.get("auth"), "query": info.handshake.get("query"),
            "data": info.data}


async def build(args: argparse.Namespace) -> tuple[web.Application, Any]:
    sio = socketio.AsyncServer(async_mode="aiohttp", namespaces="*")
    # --host-prefix: each worker plays a host of its own (multi-host mode).
    host = f"{args.host_prefix}{args.slot}" if args.host_prefix else ""
    sio.eio.generate_id = lambda: mint_sid(args.slot, args.generation, host)
    app = web.Application()
    sio.attach(app)

    @sio.on("connect", namespace="*")
    async def connect(namespace: str, sid: str, environ: Any, auth: Any = None) -> None:
        for room in (auth or {}).get("rooms", []):
            await sio.enter_room(sid, room, namespace=namespace)
        user = (auth or {}).get("user")
        if user == "opaque":  # a session that cannot travel between workers
            await sio.save_session(sid, {"user": object()}, namespace=namespace)
        elif user:
            await sio.save_session(sid, {"user": user, "seen": [1, 2]}, namespace=namespace)

    @sio.on("whoami", namespace="*")
    async def whoami(namespace: str, sid: str, *args: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "slot": args_ns.slot, "sid": sid}

    @sio.on("echo", namespace="*")
    async def echo(namespace: str, sid: str, *args: Any) -> Any:
        return args[0] if len(args) == 1 else args

    args_ns = args
    config = config_from_dict({
        "adapter": {
            "backend": args.backend,
            "redis_url": args.redis_url,
            "amqp_url": args.amqp_url,
            "channel": args.channel,
            "request_timeout_s": args.request_timeout,
            "heartbeat_interval_s": args.heartbeat,
            "outage_buffer_s": args.outage_buffer_s,
            "outage_buffer_bytes": args.outage_buffer_bytes,
            "emitter_channel": args.emitter_channel,
            "emitter_queue_ttl_s": args.emitter_queue_ttl_s,
            "emitter_consume_delay_s": args.emitter_consume_delay_s,
        }
    }).for_worker()
    config = dataclasses.replace(config, host_id=host)
    handle = await install_adapter(
        sio, config, slot=args.slot, generation=args.generation, runtime_dir=args.runtime_dir
    )
    manager = sio.manager

    @manager.on_server_side("whoami")
    def sse_whoami(*a: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "slot": args.slot, "args": list(a)}  # bytes and all

    @manager.on_server_side("slow")
    async def sse_slow(delay: float) -> dict[str, Any]:
        if args.slot != 0:  # slot 0 drives the test; the others are "remote"
            await asyncio.sleep(delay * args.slot)
        return {"slot": args.slot}

    async def op(request: web.Request) -> web.Response:
        o = await request.json()
        kind = o["kind"]
        nsp = o.get("namespace", "/")
        result: Any = None
        if kind == "emit":
            await sio.emit(o["event"], _data(o), to=o.get("to"), skip_sid=o.get("skip_sid"),
                           namespace=nsp)
        elif kind == "emit_many":
            for i in range(o["count"]):
                await sio.emit(o["event"], i, to=o.get("to"), namespace=nsp)
                if o.get("pause"):
                    await asyncio.sleep(o["pause"])
        elif kind == "broadcast":
            await manager.broadcast(o["event"], _data(o), room=o.get("to"), namespace=nsp,
                                    except_rooms=o.get("except"))
        elif kind == "call":
            result = _b(await sio.call(o["event"], _data(o), to=o["to"], namespace=nsp,
                                       timeout=o.get("timeout", 5)))
        elif kind == "emit_callback":
            done = asyncio.Event()
            got: list[Any] = []

            def cb(*a: Any) -> None:
                got.append(list(a))
                done.set()

            await sio.emit(o["event"], _data(o), to=o["to"], namespace=nsp, callback=cb)
            await asyncio.wait_for(done.wait(), 5)
            result = _b(got[0])
        elif kind == "enter_room":
            await sio.enter_room(o["sid"], o["room"], namespace=nsp)
        elif kind == "leave_room":
            await sio.leave_room(o["sid"], o["room"], namespace=nsp)
        elif kind == "close_room":
            await sio.close_room(o["room"], namespace=nsp)
        elif kind == "disconnect":
            await sio.disconnect(o["sid"], namespace=nsp)
        elif kind == "fetch":
            sockets = await manager.fetch_sockets(o.get("room"), nsp,
                                                  except_rooms=o.get("except"))
            result = [_sock(s) for s in sockets]
        elif kind == "sockets_join":
            await manager.sockets_join(o["rooms"], o.get("room"), nsp,
                                       except_rooms=o.get("except"))
        elif kind == "sockets_leave":
            await manager.sockets_leave(o["rooms"], o.get("room"), nsp,
                                        except_rooms=o.get("except"))
        elif kind == "disconnect_sockets":
            await manager.disconnect_sockets(o.get("room"), nsp, except_rooms=o.get("except"),
                                             close=o.get("close", False))
        elif kind == "sse":
            try:
                got_acks = await manager.server_side_emit_with_ack(
                    o["event"], *_b(o.get("args", [])), timeout=o.get("timeout"))
                result = {"results": _b(got_acks)}
            except RequestTimeout as exc:
                result = {"timeout": True, "results": _b(exc.results),
                          "missing": sorted(exc.missing)}
        elif kind == "server_count":
            result = manager.server_count()
        elif kind == "status":
            result = handle.status().document()
        else:
            raise web.HTTPBadRequest(text=f"unknown op {kind}")
        return web.json_response({"result": result})

    app.router.add_post("/op", op)
    return app, handle


async def serve(args: argparse.Namespace) -> None:
    app, handle = await build(args)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    print(f"READY {handle.status().document().get('node', '-')}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await handle.close()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--generation", type=int, default=1)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runtime-dir", required=True)
    parser.add_argument("--backend", default="local")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--channel", default="siocluster-test")
    parser.add_argument("--request-timeout", type=float, default=3.0)
    parser.add_argument("--heartbeat", type=float, default=0.2)
    parser.add_argument("--outage-buffer-s", type=float, default=30.0)
    parser.add_argument("--outage-buffer-bytes", type=int, default=1_048_576)
    parser.add_argument("--emitter-channel", default="socketio")
    parser.add_argument("--emitter-queue-ttl-s", type=float, default=300.0)
    parser.add_argument("--emitter-consume-delay-s", type=float, default=0.0)
    parser.add_argument("--host-prefix", default="")
    args = parser.parse_args(argv)
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
