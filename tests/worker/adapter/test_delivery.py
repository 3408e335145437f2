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


def test_frame_channel_only_for_broadcasts_to_one_room_with_dynamic_rooms() -> None:
    from worker.adapter.delivery import frame_channel
    from worker.adapter.envelope import MsgType

    assert frame_channel(True, MsgType.BROADCAST, "/", None, ("lobby",)) == "r#/#slobby"
    assert frame_channel(False, MsgType.BROADCAST, "/", None, ("lobby",)) is None
    assert frame_channel(True, MsgType.JOIN, "/", None, ("lobby",)) is None
    assert frame_channel(True, MsgType.BROADCAST, "/", "0.1", ("lobby",)) is None  # directed


def test_python_socketio_arguments_read_as_rooms_and_args() -> None:
    from worker.adapter.delivery import anyone, as_args, as_rooms

    assert as_rooms(None) == () and as_rooms("red") == ("red",) and as_rooms(5) == (5,)
    assert as_rooms(["a", None, 2]) == ("a", 2)
    assert as_args(None) == [] and as_args((1, 2)) == [1, 2] and as_args([1, 2]) == [[1, 2]]
    assert anyone(A) is Owner.ANY


NS = {
    None: {"s1": "e1", "s2": "e2", "s3": "e3"},
    "s1": {"s1": "e1"}, "s2": {"s2": "e2"}, "s3": {"s3": "e3"},
    "red": {"s1": "e1", "s2": "e2"}, 7: {"s3": "e3"},
}


def test_select_is_targets_minus_except_rooms() -> None:
    from worker.adapter.delivery import select

    assert select(NS, (), ()) == {"s1": "e1", "s2": "e2", "s3": "e3"}
    assert select(NS, ("red", 7), ("s2",)) == {"s1": "e1", "s3": "e3"}
    assert select(NS, ("blue",), ()) == {}
    assert select(NS, (), ("red",)) == {"s3": "e3"}
    assert select(None, (), ()) == {} and select({}, ("red",), ()) == {}


def test_holds_any_decides_whether_a_body_is_decoded() -> None:
    from worker.adapter.delivery import holds_any

    assert holds_any(NS, ()) and holds_any(NS, ("blue", 7))
    assert not holds_any(NS, ("blue",))
    assert not holds_any(None, ()) and not holds_any({}, ())
