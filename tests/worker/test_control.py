from __future__ import annotations

import pytest

from worker.control import (
    BootFailed,
    Drain,
    FrameDecoder,
    FrameError,
    Heartbeat,
    LeaseRelease,
    LeaseReply,
    LeaseRequest,
    LeaseView,
    Ready,
    SingletonReport,
    encode,
)


def test_messages_survive_any_split() -> None:
    messages = [Ready(pid=1, engineio_path="/socket.io/", ping_interval_s=25, ping_timeout_s=20),
                Heartbeat(connections=3, handshakes_total=9, loop_lag_s=0.01, adapter={"a": 1}),
                BootFailed(error="boom", traceback="tb"), Drain(timeout_s=1.5),
                LeaseRequest(name="tick", seq=7, eligible=False),
                LeaseReply(name="tick", seq=7, granted=True,
                           current=LeaseView(host="h", slot=1, pid=2, token=3, since=4.5)),
                LeaseRelease(name="tick", token=3),
                Heartbeat(connections=0, handshakes_total=0, loop_lag_s=0.0,
                          singletons={"tick": SingletonReport(held=True, errors=1)})]
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


def test_the_worker_config_travels_typed() -> None:
    from supervisor.config import config_from_dict
    from worker.control import Configure, FrameDecoder, FrameError

    config = config_from_dict({"limits": {"max_message_bytes": 123},
                               "auth": {"algorithms": ["HS256"]},
                               "cluster": {"graceful_timeout_s": 7.5}}).for_worker()
    msg = Configure(slot=1, generation=2, socket_path="/s", runtime_dir="/r", app="a:b",
                    config=config, master_pid=9)
    [back] = FrameDecoder().feed(encode(msg))
    assert back == msg
    assert back.config.limits.max_message_bytes == 123
    assert back.config.auth.algorithms == ("HS256",)
    assert back.config.graceful_timeout_s == 7.5
    wrong = encode(msg).replace(b'"max_message_bytes":123', b'"max_message_bytes":"x"')
    wrong = len(wrong[4:]).to_bytes(4, "big") + wrong[4:]
    with pytest.raises(FrameError, match="max_message_bytes"):
        FrameDecoder().feed(wrong)
