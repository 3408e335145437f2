from __future__ import annotations

import itertools

from supervisor.events import EventLog, Observation, observed_changes


def test_ring_keeps_the_last_events_with_increasing_ids() -> None:
    clock = itertools.count(100.0)
    log = EventLog(maxlen=3, clock=lambda: next(clock))
    seen = []
    log.listeners.append(seen.append)
    for i in range(5):
        log.add("started", f"worker {i} started", slot=i)
    assert len(log) == 3
    assert [e.id for e in log.since()] == [3, 4, 5]
    assert [e.id for e in log.since(4)] == [5]
    assert log.since(5) == []
    assert [e.text for e in seen] == [f"worker {i} started" for i in range(5)]
    assert log.since()[-1].as_dict() == {"id": 5, "t": 104.0, "kind": "started",
                                         "level": "info", "text": "worker 4 started", "slot": 4}


def test_guard_refusals_are_summed_per_worker_and_successes_are_not_events() -> None:
    before = Observation(guards={(0, 1): {"auth_ok": 5, "auth_failed": 1,
                                          "auth_failed_expired": 1, "rate_limited": 0,
                                          "rate_limited_dropped": 0}})
    after = Observation(guards={(0, 1): {"auth_ok": 9, "auth_failed": 4,
                                         "auth_failed_expired": 3, "auth_failed_signature": 1,
                                         "rate_limited": 2, "rate_limited_dropped": 2}})
    assert observed_changes(before, after) == [
        ("guard", "warning", "worker 0 refused: 2 auth_failed_expired, 1 auth_failed_signature, "
         "2 rate_limited_dropped", 0)]
    assert observed_changes(after, after) == []


def test_a_replacement_worker_is_not_compared_with_its_predecessor() -> None:
    before = Observation(guards={(0, 1): {"auth_failed_expired": 7}},
                         adapters={(0, 1): "connected"})
    after = Observation(guards={(0, 2): {"auth_failed_expired": 1}},
                        adapters={(0, 2): "reconnecting"})
    assert observed_changes(before, after) == []


def test_balancer_refusals() -> None:
    before = Observation(balancer={"rate_limited": 3, "session_limited": 0})
    after = Observation(balancer={"rate_limited": 4, "session_limited": 2,
                                  "proxy_protocol_errors": 0})
    assert observed_changes(before, after) == [
        ("guard", "warning",
         "balancer: new sessions refused by handshake_rate_per_ip (429): 1", None),
        ("guard", "warning",
         "balancer: new sessions refused by max_sessions_per_ip (429): 2", None),
    ]


def test_adapter_outage_and_recovery() -> None:
    connected = Observation(adapters={(1, 5): "connected"}, backend="redis")
    down = Observation(adapters={(1, 5): "reconnecting"}, backend="redis")
    assert observed_changes(connected, down) == [
        ("adapter", "warning", "worker 1 adapter (redis) lost: connected -> reconnecting", 1)]
    assert observed_changes(down, connected) == [
        ("adapter", "info", "worker 1 adapter (redis) back: reconnecting -> connected", 1)]
    unknown = Observation(adapters={(1, 5): None}, backend="redis")
    assert observed_changes(unknown, connected) == []
