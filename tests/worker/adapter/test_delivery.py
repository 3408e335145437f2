"""The delivery plan: who else must hear of a selector.  No sockets."""

from __future__ import annotations

from balancer.sid import mint_sid
from worker.adapter.delivery import Delivery, looks_like_sid, plan_delivery
from worker.adapter.transport import Owner

A, B, GONE = mint_sid(0, 1), mint_sid(1, 2), mint_sid(2, 3)
OWNERS = {A: "0.1", B: "1.2", GONE: Owner.GONE}


def owner_of(sid: str) -> str | Owner:
    return OWNERS.get(sid, Owner.ANY)


def test_no_targets_is_everyone() -> None:
    assert plan_delivery((), set(), owner_of) == ([Delivery(None, ())], 0)


def test_local_sids_stay_here() -> None:
    assert plan_delivery((A,), {A}, owner_of) == ([], 0)


def test_sids_go_to_their_owners_only() -> None:
    assert plan_delivery((A, B), set(), owner_of) == (
        [Delivery("0.1", (A,)), Delivery("1.2", (B,))], 0)


def test_a_room_goes_to_everyone_and_the_sids_ride_along() -> None:
    assert plan_delivery(("red", A), set(), owner_of) == ([Delivery(None, ("red", A))], 0)


def test_a_gone_owner_is_counted_not_sent() -> None:
    assert plan_delivery((GONE, B), set(), owner_of) == ([Delivery("1.2", (B,))], 1)


def test_what_looks_like_a_sid() -> None:
    assert looks_like_sid(A)
    assert not looks_like_sid("red") and not looks_like_sid(7)
    assert not looks_like_sid("a.b.short")


def test_room_channels_only_for_one_room_that_is_not_a_sid() -> None:
    from balancer.sid import mint_sid
    from worker.adapter.delivery import room_channel

    assert room_channel("/", ("lobby",)) == "r#/#slobby"
    assert room_channel("/chat", (5,)) == "r#/chat#i5" != room_channel("/chat", ("5",))
    assert room_channel("/", ()) is None  # everyone
    assert room_channel("/", ("a", "b")) is None  # several rooms
    assert room_channel("/", (mint_sid(0, 1, "h1"),)) is None  # a sid: its owner's channel
    assert room_channel("/", (mint_sid(0, 1),)) is None
