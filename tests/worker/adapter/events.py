"""A TransportEvents that records what a transport reports (a fake of the manager)."""

from __future__ import annotations

import asyncio
import time

from worker.adapter.envelope import Envelope, MsgType, parse, serialize
from worker.adapter.transport import AdapterState

__all__ = ["Recorder", "frame", "until"]


class Recorder:
    def __init__(self) -> None:
        self.frames: list[Envelope] = []
        self.up: list[str] = []
        self.down: list[str] = []
        self.states: list[AdapterState] = []

    async def frame_received(self, frame: bytes) -> None:
        env = parse(frame)
        if env.type != MsgType.HELLO:
            self.frames.append(env)

    def peer_up(self, node: str) -> None:
        self.up.append(node)

    def peer_down(self, node: str) -> None:
        self.down.append(node)

    def state_changed(self, state: AdapterState) -> None:
        self.states.append(state)

    def data(self, node: str | None = None) -> list[object]:
        return [e.data for e in self.frames if node is None or e.node == node]


def frame(node: str, data: object, seq: int = 0, to: str | None = None) -> bytes:
    kind = MsgType.ACK if to else MsgType.BROADCAST
    return serialize(Envelope(kind, node, "/", data, seq=seq, to=to))


async def until(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
