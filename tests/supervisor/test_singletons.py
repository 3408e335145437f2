"""The master's book of singleton holders: freshest token wins, increases are handovers."""

from __future__ import annotations

from supervisor.singletons import SingletonBook, may_acquire
from worker.control import LeaseView, SingletonReport


def view(pid: int, token: int, host: str = "h", since: float = 100.0) -> LeaseView:
    return LeaseView(host=host, slot=pid % 10, pid=pid, token=token, since=since)


def test_freshest_token_wins_and_counts_handovers() -> None:
    book = SingletonBook("h")
    book.granted("tick", view(1, 1))
    # A candidate's stale report does not bring the old holder back.
    book.observe({"tick": SingletonReport(held=False, current=view(1, 1))})
    book.observe({"tick": SingletonReport(held=True, current=view(2, 4, host="other"),
                                          errors=2)})
    book.observe({"tick": SingletonReport(held=False, current=view(1, 1))})
    assert book.current["tick"] == view(2, 4, host="other")
    assert book.handovers == {"tick": 3}, "tenures 2 and 3 happened elsewhere"
    [entry] = book.status(now_wall=112.34)
    assert entry == {"name": "tick", "holder": {"host": "other", "slot": 2, "pid": 2},
                     "token": 4, "held_for_s": 12.3, "handovers": 3, "errors": 2}


def test_release_exit_and_a_reset_redis() -> None:
    book = SingletonBook("h")
    book.granted("a", view(1, 5))
    book.vacate("a", 4)
    assert book.current["a"] is not None, "only the tenure released"
    book.vacate("a", 5)
    assert book.current["a"] is None
    book.granted("a", view(2, 6))
    book.holder_exited(3)
    assert book.current["a"] is not None
    book.holder_exited(2)
    assert book.status(0.0)[0]["holder"] is None
    # Redis restarted empty: a worker that holds token 1 is believed.
    book.observe({"a": SingletonReport(held=True, current=view(7, 1))})
    assert book.current["a"] == view(7, 1)
    book.observe({"b": SingletonReport(held=False)})
    assert book.status(0.0)[1] == {"name": "b", "holder": None, "token": None,
                                   "held_for_s": None, "handovers": 0, "errors": 0}


def test_a_roll_prefers_workers_that_stay_but_never_leaves_the_lease_unheld() -> None:
    staying, leaving, stopped = (True, False), (True, True), (False, False)
    assert may_acquire(staying, [leaving])
    assert not may_acquire(stopped, [])
    assert not may_acquire(leaving, [staying, leaving]), "a worker that stays takes it"
    assert may_acquire(leaving, [leaving, stopped]), "nobody that stays can: take it"
    assert may_acquire(leaving, [])
