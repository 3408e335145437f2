from __future__ import annotations

import pytest

from worker.control import (
    BootFailed,
    Drain,
    FrameDecoder,
    FrameError,
    Heartbeat,
    Ready,
    encode,
)


def test_messages_survive_any_split() -> None:
    messages = [Ready(pid=1, engineio_path="/socket.io/", ping_interval_s=25, ping_timeout_s=20),
                Heartbeat(connections=3, handshakes_total=9, loop_lag_s=0.01, adapter={"a": 1}),
                BootFailed(error="boom", traceback="tb"), Drain(timeout_s=1.5)]
    wire = b"".join(encode(m) for m in messages)
    for step in (1, 3, 7, len(wire)):
        decoder = FrameDecoder()
        out = []
        for i in range(0, len(wire), step):
            out += decoder.feed(wire[i:i + step])
        assert out == messages


def test_garbage_is_a_frame_error() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(b"\x00\x00\x00\x02{}")
    with pytest.raises(FrameError):
        FrameDecoder().feed(b"\xff\xff\xff\xff")
