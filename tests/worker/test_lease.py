"""The lease rules, driven with a fake clock: no sockets, no processes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.lease import (
    Event,
    Grant,
    Holder,
    HolderLease,
    LeaseTable,
    amqp_heartbeat_s,
    margin_for,
    poll_interval,
)

A = Holder("0.1", "h", 0, 100)
B = Holder("1.2", "h", 1, 101)
LEASE = 5.0


def test_first_request_acquires_then_renews_and_others_are_refused() -> None:
    table = LeaseTable(LEASE)
    d = table.request("tick", A, eligible=True, now=0.0, wall=1000.0)
    assert d.granted and d.new_tenure and d.current == Grant(A, 1, 1000.0)
    d = table.request("tick", B, eligible=True, now=1.0, wall=1001.0)
    assert not d.granted and d.current is not None and d.current.holder == A
    d = table.request("tick", A, eligible=True, now=4.0, wall=1004.0)
    assert d.granted and not d.new_tenure
    # Renewed at 4.0: still A's at 8.9, free at 9.0.
    assert not table.request("tick", B, eligible=True, now=8.9, wall=0).granted
    d = table.request("tick", B, eligible=True, now=9.0, wall=0)
    assert d.granted and d.new_tenure and d.current is not None and d.current.token == 2
    assert table.handovers == {"tick": 1}


def test_release_and_exit_free_the_lease_at_once() -> None:
    table = LeaseTable(LEASE)
    table.request("a", A, eligible=True, now=0.0, wall=0)
    table.request("b", A, eligible=True, now=0.0, wall=0)
    assert not table.release("a", B.key, 1), "only the holder releases"
    assert not table.release("a", A.key, 7), "only with its token"
    assert table.release("a", A.key, 1)
    assert table.request("a", B, eligible=True, now=0.1, wall=0).granted
    assert table.forget(A.key) == ["b"]
    assert table.current("b", 0.2) is None
    assert table.request("b", B, eligible=True, now=0.2, wall=0).granted


def test_a_draining_worker_renews_but_never_acquires() -> None:
    table = LeaseTable(LEASE)
    assert not table.request("a", A, eligible=False, now=0.0, wall=0).granted
    table.request("a", A, eligible=True, now=0.0, wall=0)
    assert table.request("a", A, eligible=False, now=1.0, wall=0).granted


def test_holder_validity_counts_from_the_send_time() -> None:
    lease = HolderLease(LEASE, margin_for(LEASE))
    seq = lease.begin(10.0)
    grant = Grant(A, 1, 0.0)
    assert lease.on_reply(seq, True, grant, now=10.5) is Event.STARTED
    assert lease.valid_until == 10.0 + LEASE - margin_for(LEASE)
    seq = lease.begin(12.0)
    assert lease.on_reply(seq, True, grant, now=12.1) is Event.RENEWED
    assert lease.valid(15.9) and not lease.valid(16.0)
    assert lease.expire(15.0) is Event.NONE
    assert lease.expire(16.0) is Event.LOST and not lease.holding


def test_a_reply_read_after_a_pause_extends_nothing() -> None:
    """SIGSTOP right after sending: the grant waited in the socket for 30 s."""
    lease = HolderLease(LEASE, margin_for(LEASE))
    lease.on_reply(lease.begin(0.0), True, Grant(A, 1, 0.0), now=0.01)
    seq = lease.begin(1.0)
    # ... paused ...; on resume the watchdog has not run yet, the reply is read first.
    assert lease.on_reply(seq, True, Grant(A, 1, 0.0), now=31.0) is Event.LOST
    assert not lease.valid(31.0)


def test_refusal_while_holding_is_a_loss_and_stale_replies_are_ignored() -> None:
    lease = HolderLease(LEASE, margin_for(LEASE))
    first = lease.begin(0.0)
    second = lease.begin(0.5)
    assert lease.on_reply(second, True, Grant(A, 3, 0.0), now=0.6) is Event.STARTED
    assert lease.on_reply(first, True, Grant(A, 3, 0.0), now=0.7) is Event.NONE
    seq = lease.begin(1.0)
    assert lease.on_reply(seq, False, Grant(B, 4, 0.0), now=1.1) is Event.LOST
    assert lease.current == Grant(B, 4, 0.0)
    seq = lease.begin(2.0)
    assert lease.on_reply(seq, False, Grant(B, 4, 0.0), now=2.1) is Event.NONE


def test_a_new_token_is_a_new_tenure() -> None:
    lease = HolderLease(LEASE, margin_for(LEASE))
    lease.on_reply(lease.begin(0.0), True, Grant(A, 1, 0.0), now=0.0)
    assert lease.on_reply(lease.begin(1.0), True, Grant(A, 2, 0.0), now=1.0) is Event.STARTED
    assert lease.token == 2


def test_poll_interval() -> None:
    assert poll_interval(5.0, 1.0) == 1.0
    assert poll_interval(1.0, 1.0) == 1 / 3


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),  # who asks
            st.floats(min_value=0.0, max_value=3.0),  # time before it sends
            st.floats(min_value=0.0, max_value=8.0),  # how long the request takes to arrive
            st.floats(min_value=0.0, max_value=8.0),  # how long the reply takes
        ),
        max_size=40,
    )
)
def test_never_two_valid_holders(ops: list[tuple[str, float, float, float]]) -> None:
    """Whatever the delays (pauses included), a believing holder is the table's holder.

    A discrete-event run: sends, arrivals at the granting side and replies, in
    time order; each stream keeps its order, as a socket does.
    """
    table = LeaseTable(LEASE)
    holders = {"a": A, "b": B}
    sides = {k: HolderLease(LEASE, margin_for(LEASE)) for k in holders}
    events: list[tuple[float, int, str, str, int]] = []  # (time, order, kind, who, op index)
    last_arrival = {"a": 0.0, "b": 0.0}
    last_reply = {"a": 0.0, "b": 0.0}
    sent = 0.0
    for i, (who, gap, to_master, to_worker) in enumerate(ops):
        sent += gap
        arrive = last_arrival[who] = max(last_arrival[who], sent + to_master)
        reply = last_reply[who] = max(last_reply[who], arrive + to_worker)
        events += [(sent, 0, "send", who, i), (arrive, 1, "arrive", who, i),
                   (reply, 2, "reply", who, i)]
    seqs: dict[int, int] = {}
    decisions: dict[int, tuple[bool, Grant | None]] = {}
    for t, _order, kind, who, i in sorted(events):
        if kind == "send":
            seqs[i] = sides[who].begin(t)
        elif kind == "arrive":
            d = table.request("x", holders[who], eligible=True, now=t, wall=0)
            decisions[i] = (d.granted, d.current)
        else:
            granted, current = decisions[i]
            sides[who].on_reply(seqs[i], granted, current, now=t)
        for k, s in sides.items():
            if s.valid(t):
                current = table.current("x", t)
                assert current is not None and current.holder == holders[k], (k, t)


@given(st.floats(min_value=0.05, max_value=3600.0))
def test_amqp_heartbeat_lets_the_holder_give_up_before_the_broker_frees_the_lock(
    lease_s: float,
) -> None:
    """RabbitMQ frees an exclusive queue 2 to 3 heartbeat timeouts after the last byte
    of a silent holder: at least 2T, which must cover the holder's validity."""
    t = amqp_heartbeat_s(lease_s)
    assert isinstance(t, int) and t >= 1
    # No sooner than a lease_s expiry would: the holder keeps its whole margin.
    assert 2 * t >= lease_s > lease_s - margin_for(lease_s)
    # The smallest such whole second: a stopped holder is replaced as soon as it can be.
    assert t == 1 or 2 * (t - 1) < lease_s


def test_amqp_heartbeat_for_the_default_lease() -> None:
    assert amqp_heartbeat_s(5.0) == 3  # freed 6 to 9 s after a holder stops
    assert amqp_heartbeat_s(1.0) == 1


def test_the_amqp_lease_connection_sets_its_own_heartbeat() -> None:
    """Whatever heartbeat the adapter's URL asks for, the lease connection's is the
    one the fence was worked out for: a shorter one would let the broker free the
    lock while the stopped holder still thinks it holds it; a longer one (or none)
    would delay its replacement."""
    from worker.singleton_amqp import AmqpLeases

    leases = AmqpLeases("amqp://u:p%40ss@broker:5672/vh?heartbeat=60&frame_max=8192", "c",
                        slot=0, generation=1, lease_s=5.0)
    assert "heartbeat=3" in leases.url and "heartbeat=60" not in leases.url
    assert "frame_max=8192" in leases.url and leases.url.startswith("amqp://u:p%40ss@broker:5672/vh?")
