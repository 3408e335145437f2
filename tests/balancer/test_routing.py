from __future__ import annotations

from balancer.routing import (
    NO_WORKER,
    SESSION_UNKNOWN,
    Forward,
    WorkerView,
    extract_sid,
    route,
)
from balancer.sid import mint_sid


def view(slot: int, gen: int, *, accepting: bool = True, serving: bool = True,
         load: int = 0) -> WorkerView:
    return WorkerView(slot, gen, accepting, serving, load)


def test_extract_sid() -> None:
    assert extract_sid("EIO=4&transport=polling") is None
    assert extract_sid("EIO=4&sid=abc&t=1") == "abc"
    assert extract_sid("sid=first&sid=second") == "first"
    assert extract_sid("xsid=nope&EIO=4") is None
    assert extract_sid("") is None


def test_new_session_goes_to_least_loaded_ready_worker() -> None:
    workers = [view(0, 1, load=5), view(1, 2, load=2), view(2, 3, load=2, accepting=False)]
    assert route(None, workers) == Forward(1, 2, new_session=True)


def test_ties_go_to_the_first_and_counted_handshakes_spread_a_burst() -> None:
    loads = {0: 0, 1: 0}
    picks = []
    for _ in range(6):
        decision = route(None, [view(s, s, load=n) for s, n in loads.items()])
        assert isinstance(decision, Forward)
        loads[decision.slot] += 1
        picks.append(decision.slot)
    assert picks == [0, 1, 0, 1, 0, 1]


def test_sid_goes_to_its_owner_even_when_draining() -> None:
    sid = mint_sid(1, 7)
    workers = [view(0, 3), view(1, 7, accepting=False, serving=True, load=100)]
    assert route(sid, workers) == Forward(1, 7, new_session=False)


def test_sid_of_a_replaced_generation_is_unknown() -> None:
    assert route(mint_sid(1, 7), [view(0, 3), view(1, 8)]) is SESSION_UNKNOWN


def test_rolling_restart_keeps_both_generations_of_a_slot() -> None:
    workers = [view(0, 7, accepting=False), view(0, 9)]
    assert route(mint_sid(0, 7), workers) == Forward(0, 7, new_session=False)
    assert route(mint_sid(0, 9), workers) == Forward(0, 9, new_session=False)
    assert route(None, workers) == Forward(0, 9, new_session=True)


def test_sid_of_a_stopped_worker_is_unknown() -> None:
    workers = [view(0, 3, accepting=False, serving=False)]
    assert route(mint_sid(0, 3), workers) is SESSION_UNKNOWN


def test_foreign_or_garbage_sids_are_unknown() -> None:
    workers = [view(0, 1)]
    for sid in ["", "abc", "zz.1.x", "0.1.", "0..x", "1" * 5 + ".1.x", "0.1", "0.g.x",
                "ZmZmZmZmZmZmZmZmZmZm", "0.-1.abc", "%30.1.abc"]:
        assert route(sid, workers) is SESSION_UNKNOWN, sid


def test_no_ready_worker_is_503() -> None:
    assert route(None, []) is NO_WORKER
    assert route(None, [view(0, 1, accepting=False)]) is NO_WORKER
    assert NO_WORKER.status == 503


def test_session_unknown_body_is_engineio_s() -> None:
    assert SESSION_UNKNOWN.status == 400
    assert SESSION_UNKNOWN.body == b'{"code":1,"message":"Session ID unknown"}'


def test_a_sid_of_another_live_host_goes_there() -> None:
    from balancer.routing import ToHost, route_host
    from balancer.sid import mint_sid

    theirs, ours = mint_sid(0, 1, "h2"), mint_sid(0, 1, "h1")
    live = {"h1", "h2"}
    assert route_host(theirs, host="h1", live_hosts=live, forwarded=False) == ToHost("h2")
    assert route_host(ours, host="h1", live_hosts=live, forwarded=False) is None
    assert route_host(None, host="h1", live_hosts=live, forwarded=False) is None
    # the host left: the 400 at once, so the client re-handshakes
    assert route_host(theirs, host="h1", live_hosts={"h1"}, forwarded=False) == SESSION_UNKNOWN
    # a forwarded request is never forwarded again
    assert route_host(theirs, host="h1", live_hosts=live, forwarded=True) == SESSION_UNKNOWN
    # a sid without a host (minted before multi-host mode) is this host's
    assert route_host(mint_sid(0, 1), host="h1", live_hosts=live, forwarded=False) is None
    # and a host's own sid routes to its worker as before
    workers = [WorkerView(0, 1, accepting=True, serving=True, load=0)]
    assert route(ours, workers, "h1") == Forward(0, 1, False)
    assert route(ours, workers) == SESSION_UNKNOWN  # another cluster's, or multi-host is off
    assert route(mint_sid(0, 1), workers, "h1") == Forward(0, 1, False)
