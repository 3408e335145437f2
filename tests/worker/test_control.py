from __future__ import annotations

import pytest

from worker.control import (
    AdapterFigures,
    AdapterStatus,
    BootFailed,
    Drain,
    ExternalStatus,
    FrameDecoder,
    FrameError,
    Heartbeat,
    LeaseRelease,
    LeaseReply,
    LeaseRequest,
    LeaseView,
    Ready,
    SingletonReport,
    TransportStatus,
    encode,
)

TRANSPORT = TransportStatus(sharded=None, rooms_subscribed=0, transport_sent=5,
                            undeliverable_remote=1, transport_errors=0, buffered=0,
                            buffered_bytes=0, overflowed=2, overflowed_bytes=64, expired=1,
                            outages=1, reconnects=1)
ADAPTER = AdapterStatus("redis", "connected", AdapterFigures(
    node="0.1.ab", peers=["1.1.cd"], server_count=2, sent=7, received=6, heartbeats_sent=3,
    heartbeats_received=3, dropped=3, undeliverable=1, duplicates=0, lost=0, skipped=2,
    errors=0, handler_errors=0, requests_pending=0, requests_timed_out=0, buffered_bytes=0,
    transport=TRANSPORT,
    external={"redis-emitter": ExternalStatus(channel="socketio", state="connected",
                                              received=4, errors=0, reconnects=0)},
    emits={"internal": 7, "redis-emitter": 4}, external_refused={"redis-emitter/pickle": 1},
))


def test_messages_survive_any_split() -> None:
    messages = [Ready(pid=1, engineio_path="/socket.io/", ping_interval_s=25, ping_timeout_s=20),
                Heartbeat(connections=3, handshakes_total=9, loop_lag_s=0.01, adapter=ADAPTER),
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


def test_the_adapter_status_reads_as_the_flat_status_document_and_its_gauges() -> None:
    assert ADAPTER.document() == {
        "backend": "redis", "state": "connected", "node": "0.1.ab", "peers": ["1.1.cd"],
        "server_count": 2, "sent": 7, "received": 6, "heartbeats_sent": 3,
        "heartbeats_received": 3, "dropped": 3, "undeliverable": 1, "duplicates": 0,
        "lost": 0, "skipped": 2, "errors": 0, "handler_errors": 0, "requests_pending": 0,
        "requests_timed_out": 0, "buffered_bytes": 0,
        # Only the fields this backend reports (sharded: None is reported, not left out)
        "transport": {"sharded": None, "rooms_subscribed": 0, "transport_sent": 5,
                      "undeliverable_remote": 1, "transport_errors": 0, "buffered": 0,
                      "buffered_bytes": 0, "overflowed": 2, "overflowed_bytes": 64,
                      "expired": 1, "outages": 1, "reconnects": 1},
        "external": {"redis-emitter": {"channel": "socketio", "state": "connected",
                                       "received": 4, "errors": 0, "reconnects": 0}},
        "emits": {"internal": 7, "redis-emitter": 4},
        "external_refused": {"redis-emitter/pickle": 1},
    }
    # The names of the siocluster_adapter_* gauges on /metrics.
    assert list(ADAPTER.gauges()) == [
        "server_count", "sent", "received", "heartbeats_sent", "heartbeats_received",
        "dropped", "undeliverable", "duplicates", "lost", "skipped", "errors",
        "handler_errors", "requests_pending", "requests_timed_out", "buffered_bytes"]
    assert TRANSPORT.count("overflowed") == 2 and TRANSPORT.count("transport_dropped") == 0


def test_a_disabled_adapter_reports_its_backend_and_state_only() -> None:
    off = AdapterStatus(backend="none", state="disabled")
    assert off.document() == {"backend": "none", "state": "disabled"}
    assert off.gauges() == {}
