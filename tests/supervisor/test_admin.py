"""/health's evaluation: a pure function of the slots, the workers and the fds."""

from __future__ import annotations

from supervisor.admin import evaluate_health
from supervisor.fdlimit import FdUsage
from supervisor.handle import SlotRecord, WorkerHandle
from supervisor.state import WorkerState as S
from worker.control import AdapterStatus


def worker(slot: int, state: S = S.READY, adapter: AdapterStatus | None = None) -> WorkerHandle:
    h = WorkerHandle(slot=slot, generation=1, socket_path="", process=None)  # type: ignore[arg-type]
    if state is not S.STARTING:
        h.state = S.READY if state is not S.DRAINING else S.DRAINING
    h.adapter = adapter
    return h


def test_all_ready_is_ok() -> None:
    code, body = evaluate_health([worker(0), worker(1)], [SlotRecord(0), SlotRecord(1)], 2)
    assert (code, body["status"], body["reasons"]) == (200, "ok", [])


def test_fewer_ready_than_desired_is_degraded_not_down() -> None:
    code, body = evaluate_health([worker(0), worker(1, S.STARTING)], [], 2)
    assert (code, body["status"]) == (200, "degraded")
    assert body["reasons"] == ["1 of 2 workers ready"]


def test_no_ready_worker_is_503_with_the_reasons() -> None:
    failed = SlotRecord(0)
    failed.park(S.FAILED, reason="10 restarts in 60s")
    code, body = evaluate_health([], [failed], 1)
    assert code == 503
    assert body["reasons"] == ["slot 0 failed: 10 restarts in 60s"]


def test_backoff_adapter_and_fds_are_named() -> None:
    backing = SlotRecord(1)
    backing.park(S.BACKOFF, restart_at=9.0, reason="flapping")
    code, body = evaluate_health(
        [worker(0, adapter=AdapterStatus("redis", "degraded"))], [SlotRecord(0), backing], 2,
        [FdUsage("master", 900, 1000)],
    )
    assert code == 200 and body["status"] == "degraded"
    assert body["reasons"] == [
        "slot 1 in backoff: flapping", "worker 0 adapter degraded",
        "master has 900 of 1000 open files (90%)", "1 of 2 workers ready",
    ]


def test_slots_above_desired_do_not_count() -> None:
    failed = SlotRecord(3)
    failed.park(S.FAILED, reason="gone")
    assert evaluate_health([worker(0)], [failed], 1)[1]["status"] == "ok"


def test_a_browser_post_from_another_site_is_refused() -> None:
    from supervisor.admin import same_origin

    assert same_origin("POST", None, "127.0.0.1:8001")  # curl, the CLI: no Origin
    assert same_origin("POST", "http://127.0.0.1:8001", "127.0.0.1:8001")
    assert same_origin("POST", "https://ops.example:443", "ops.example:443")
    assert same_origin("GET", "https://evil.example", "127.0.0.1:8001")  # reads need the token
    assert not same_origin("POST", "https://evil.example", "127.0.0.1:8001")
    assert not same_origin("POST", "null", "127.0.0.1:8001")  # sandboxed frames, file://
    assert not same_origin("POST", "http://127.0.0.1:8001", None)
