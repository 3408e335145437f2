"""The master's @singleton lease desk: grants, renewals, roll preference, exits (no I/O)."""

from __future__ import annotations

from supervisor.handle import WorkerHandle
from supervisor.leasedesk import LeaseDesk
from worker import control

STAYS = (True, False)  # (serving, leaving)
LEAVING = (True, True)
STARTING = (False, False)


def handle(slot: int, pid: int, generation: int = 1) -> WorkerHandle:
    process = type("P", (), {"pid": pid})()
    return WorkerHandle(slot=slot, generation=generation, socket_path="",
                        process=process)  # type: ignore[arg-type]


def ask(desk: LeaseDesk, h: WorkerHandle, standing: tuple[bool, bool] = STAYS,
        others: tuple[tuple[bool, bool], ...] = (), *, now: float, seq: int = 1,
        eligible: bool = True) -> control.LeaseReply:
    msg = control.LeaseRequest(name="cron", seq=seq, eligible=eligible)
    return desk.request(h, msg, standing, list(others), now=now, wall=1000.0 + now)


def test_first_asker_gets_it_and_the_book_shows_it() -> None:
    desk = LeaseDesk(lease_s=5.0, host="h1")
    a, b = handle(0, 100), handle(1, 101)
    reply = ask(desk, a, now=0.0)
    assert reply.granted and reply.name == "cron" and reply.seq == 1
    assert reply.current is not None
    assert (reply.current.host, reply.current.slot, reply.current.pid) == ("h1", 0, 100)
    # the other worker is refused, and told who holds it
    other = ask(desk, b, now=1.0, seq=7)
    assert not other.granted and other.seq == 7
    assert other.current is not None and other.current.pid == 100
    [entry] = desk.book.status(now_wall=1003.0)
    assert entry["holder"] == {"host": "h1", "slot": 0, "pid": 100}
    assert entry["token"] == reply.current.token and entry["held_for_s"] == 3.0


def test_renewal_keeps_the_token_and_an_expired_lease_moves() -> None:
    desk = LeaseDesk(lease_s=5.0, host="h1")
    a, b = handle(0, 100), handle(1, 101)
    first = ask(desk, a, now=0.0)
    again = ask(desk, a, now=4.0)
    assert again.granted and again.current == first.current
    assert not ask(desk, b, now=8.0).granted  # renewed at 4 s: live until 9 s
    taken = ask(desk, b, now=9.5)
    assert taken.granted and taken.current is not None
    assert first.current is not None and taken.current.token > first.current.token
    assert desk.book.handovers["cron"] == 1


def test_a_leaving_worker_defers_to_one_that_stays() -> None:
    desk = LeaseDesk(lease_s=5.0, host="h1")
    old, new = handle(0, 100), handle(1, 101, generation=2)
    assert not ask(desk, old, LEAVING, (STAYS,), now=0.0).granted
    assert ask(desk, new, STAYS, (LEAVING,), now=0.1).granted


def test_a_leaving_worker_takes_it_when_no_one_else_can() -> None:
    desk = LeaseDesk(lease_s=5.0, host="h1")
    old = handle(0, 100)
    assert ask(desk, old, LEAVING, (STARTING,), now=0.0).granted


def test_a_draining_worker_renews_but_does_not_acquire() -> None:
    desk = LeaseDesk(lease_s=5.0, host="h1")
    a, b = handle(0, 100), handle(1, 101)
    assert not ask(desk, a, now=0.0, eligible=False).granted
    assert ask(desk, b, now=0.1).granted
    assert ask(desk, b, now=1.0, eligible=False).granted  # a renewal


def test_release_and_exit_free_the_lease_at_once() -> None:
    desk = LeaseDesk(lease_s=5.0, host="h1")
    a, b = handle(0, 100), handle(1, 101)
    held = ask(desk, a, now=0.0).current
    assert held is not None
    desk.release(b, control.LeaseRelease(name="cron", token=held.token))  # not b's
    assert not ask(desk, b, now=0.5).granted
    desk.release(a, control.LeaseRelease(name="cron", token=held.token))
    assert desk.book.current["cron"] is None
    second = ask(desk, b, now=0.6).current
    assert second is not None and second.pid == 101
    desk.holder_exited(b)
    assert desk.book.current["cron"] is None
    assert ask(desk, a, now=0.7).granted  # long before the 5 s lease would lapse
