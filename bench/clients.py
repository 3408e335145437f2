"""Raw Socket.IO clients on aiohttp, light enough to open thousands per process.

python-socketio's own client starts tasks, timers and reconnection logic per
connection; these speak the wire protocol of :mod:`bench.protocol` by hand and
do nothing else.  Each client is driven by one coroutine at a time (the
workloads never read and call concurrently on one client), and every read
answers the server's pings on the way.

* :class:`WsClient` over a WebSocket, opened either straight on the websocket
  transport (:meth:`WsClient.connect`) or the way browsers do it, polling
  handshake then upgrade (:func:`connect_upgraded`);
* :class:`PollingClient`: long-polling only, one GET or POST at a time.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from . import protocol as p

__all__ = ["PollingClient", "SessionError", "WsClient", "connect_upgraded"]

_TEXT_HEADERS = {"Content-Type": "text/plain;charset=UTF-8"}


class SessionError(Exception):
    """The server refused, closed or garbled a session."""


def _endpoint(base_url: str, transport: str, sid: str | None = None) -> str:
    return f"{base_url}/socket.io/?{p.query(transport, sid)}"


class WsClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, sid: str) -> None:
        self.ws = ws
        self.sid = sid
        self._next_ack = 0

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, base_url: str,
                      auth: dict[str, Any] | None = None) -> WsClient:
        """Open a session straight on the websocket transport and join namespace ``/``
        (with ``auth`` as the CONNECT payload when given)."""
        ws_url = _endpoint(base_url, "websocket").replace("http://", "ws://", 1)
        try:
            ws = await http.ws_connect(ws_url, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            raise SessionError(f"websocket handshake: {exc.status}") from None
        client = cls(ws, "")
        try:
            client.sid = str(p.parse_open(await client.recv())["sid"])
            await ws.send_str(p.CONNECT + (json.dumps(auth) if auth else ""))
            await client._await_connect()
        except BaseException:
            await ws.close()
            raise
        return client

    async def _await_connect(self) -> None:
        while True:
            packet = await self.recv()
            if packet.startswith(p.CONNECT):
                return
            if packet.startswith("44"):
                raise SessionError(f"namespace refused: {packet[:80]}")

    async def recv(self) -> str:
        """The next Engine.IO packet that is not a ping or a noop."""
        while True:
            msg = await self.ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise SessionError(f"websocket {msg.type.name.lower()}")
            data: str = msg.data
            if data == p.PING:
                await self.ws.send_str(p.PONG)
            elif data != p.NOOP:
                return data

    async def emit(self, name: str, *args: Any) -> None:
        await self.ws.send_str(p.event(name, *args))

    async def call(self, name: str, *args: Any) -> list[Any]:
        """Emit with an ack and wait for it; events read meanwhile are dropped."""
        self._next_ack += 1
        ack_id = self._next_ack
        await self.ws.send_str(p.ack_event(ack_id, name, *args))
        while True:
            packet = p.parse_sio(await self.recv())
            if isinstance(packet, p.Ack) and packet.ack_id == ack_id:
                return packet.args

    async def close(self) -> None:
        await self.ws.close()


Headers = dict[str, str]


async def _get_packets(http: aiohttp.ClientSession, url: str,
                       headers: Headers | None = None) -> list[str]:
    async with http.get(url, headers=headers) as resp:
        body = await resp.text()
        if resp.status != 200:
            raise SessionError(f"GET {resp.status}: {body[:80]}")
    return p.split_payload(body)


async def _post_packets(http: aiohttp.ClientSession, url: str, *packets: str,
                        headers: Headers | None = None) -> None:
    data = p.SEPARATOR.join(packets).encode()
    async with http.post(url, data=data,
                         headers={**_TEXT_HEADERS, **headers} if headers else _TEXT_HEADERS
                         ) as resp:
        body = await resp.text()
        if resp.status != 200:
            raise SessionError(f"POST {resp.status}: {body[:80]}")


def _cookie_headers(resp: aiohttp.ClientResponse) -> Headers:
    """A ``Cookie`` header echoing what the handshake answer set, as a browser would.

    Each client keeps its own: the generator's ``ClientSession`` is shared by
    many clients and keeps no cookies (``DummyCookieJar``).  Only a sticky
    load balancer sets one (the ``--peers`` HAProxy stack's ``SRV``).
    """
    if not resp.cookies:
        return {}
    return {"Cookie": "; ".join(f"{k}={m.value}" for k, m in resp.cookies.items())}


async def _polling_handshake(http: aiohttp.ClientSession, base_url: str
                             ) -> tuple[str, str, Headers]:
    """Open a polling session and join ``/``: (sid, its polling URL, its cookie headers)."""
    async with http.get(_endpoint(base_url, "polling")) as resp:
        body = await resp.text()
        if resp.status != 200:
            raise SessionError(f"GET {resp.status}: {body[:80]}")
        headers = _cookie_headers(resp)
    packets = p.split_payload(body)
    if not packets:
        raise SessionError("empty handshake answer")
    sid = str(p.parse_open(packets[0])["sid"])
    url = _endpoint(base_url, "polling", sid)
    await _post_packets(http, url, p.CONNECT, headers=headers)
    while True:
        for packet in await _get_packets(http, url, headers):
            if packet.startswith(p.CONNECT):
                return sid, url, headers
            if packet.startswith("44"):
                raise SessionError(f"namespace refused: {packet[:80]}")
            if packet == p.PING:
                await _post_packets(http, url, p.PONG, headers=headers)


async def connect_upgraded(http: aiohttp.ClientSession, base_url: str) -> WsClient:
    """A browser's path: polling handshake, join ``/``, then upgrade to a websocket."""
    sid, _, headers = await _polling_handshake(http, base_url)
    ws_url = _endpoint(base_url, "websocket", sid).replace("http://", "ws://", 1)
    try:
        ws = await http.ws_connect(ws_url, autoping=True, headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        raise SessionError(f"upgrade handshake: {exc.status}") from None
    client = WsClient(ws, sid)
    try:
        await ws.send_str(p.PROBE_PING)
        answer = await client.recv()
        if answer != p.PROBE_PONG:
            raise SessionError(f"expected 3probe, got {answer[:40]!r}")
        await ws.send_str(p.UPGRADE)
    except BaseException:
        await ws.close()
        raise
    return client


class PollingClient:
    def __init__(self, http: aiohttp.ClientSession, sid: str, url: str,
                 headers: Headers | None = None, *, owns_http: bool = False) -> None:
        self.http = http
        self.sid = sid
        self.url = url
        self.headers = headers or None
        self._next_ack = 0
        self._owns_http = owns_http  # close the session (its own pool) with the client

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, base_url: str, *,
                      owns_http: bool = False) -> PollingClient:
        sid, url, headers = await _polling_handshake(http, base_url)
        return cls(http, sid, url, headers, owns_http=owns_http)

    async def call(self, name: str, *args: Any) -> list[Any]:
        """POST the event, then long-poll until its ack arrives (answering pings)."""
        self._next_ack += 1
        ack_id = self._next_ack
        await _post_packets(self.http, self.url, p.ack_event(ack_id, name, *args),
                            headers=self.headers)
        while True:
            for raw in await _get_packets(self.http, self.url, self.headers):
                if raw == p.PING:
                    await _post_packets(self.http, self.url, p.PONG, headers=self.headers)
                    continue
                if raw.startswith("1"):
                    raise SessionError("server closed the session")
                packet = p.parse_sio(raw)
                if isinstance(packet, p.Ack) and packet.ack_id == ack_id:
                    return packet.args

    async def close(self) -> None:
        try:
            await _post_packets(self.http, self.url, "1", headers=self.headers)
        finally:
            if self._owns_http:
                await self.http.close()
