"""Frames on the wire: numbered and counted going out, filtered coming in.

:class:`Wire` sits between the manager and its :class:`~.transport.Transport`.
Going out (:meth:`Wire.send`) it builds the :class:`~.envelope.Envelope`,
numbers it on its stream (:mod:`.sequence`: a room channel, a peer for
directed frames, or the common broadcast stream), serializes it and hands it to
the transport.  Coming in (:meth:`Wire.accept`) it decodes the header only and
drops what is not for this worker: its own broadcasts echoed by a broker,
frames directed to another node, and repeats; everything else is counted and
handed back for dispatch.

The stream a frame is numbered on is computed from the header with the same
rule on both ends (:func:`~.delivery.frame_channel`), so sender and receiver
agree without carrying the stream's name.  Heartbeats are counted apart from
messages.
"""

from __future__ import annotations

from typing import Any

from .delivery import Room, frame_channel
from .envelope import Codec, Envelope, Header, MsgType, ParsedFrame, parse_header, serialize
from .sequence import BROADCAST, DIRECT, Deduplicator, Sequencer, Verdict
from .transport import Transport

__all__ = ["Wire"]


class Wire:
    """Sequencing, deduplication and message counts for one manager's frames."""

    def __init__(self, transport: Transport, codec: Codec) -> None:
        self.transport = transport
        self.node = transport.node
        self.codec = codec
        self.sequencer = Sequencer()
        self.dedupe = Deduplicator()
        # Counters (heartbeats are counted apart from messages)
        self.sent = 0
        self.received = 0
        self.heartbeats_sent = 0
        self.heartbeats_received = 0

    def send(
        self,
        kind: MsgType,
        nsp: str,
        data: Any,
        *,
        to: str | None = None,
        rooms: tuple[Room, ...] = (),
        exclude: tuple[Room, ...] = (),
        rid: int = 0,
        sequenced: bool = True,
        bufferable: bool = True,
    ) -> None:
        """Frame ``data`` and hand it to the transport; raises ``EncodingError``."""
        room_key = self.room_key(kind, nsp, to, rooms)
        seq = self.sequencer.next(room_key or to) if sequenced else 0
        envelope = Envelope(
            kind, self.node, nsp, data, seq=seq, to=to, rooms=rooms, exclude=exclude, rid=rid
        )
        frame = serialize(envelope, self.codec)
        if room_key is not None:
            self.transport.send_room(frame, room_key)
        else:
            self.transport.send(frame, to, bufferable=bufferable)
        if kind == MsgType.HEARTBEAT:
            self.heartbeats_sent += 1
        else:
            self.sent += 1

    def room_key(self, kind: int, nsp: str, to: str | None,
                 rooms: tuple[Room, ...]) -> str | None:
        """The room channel a frame travels on, if any; the same rule on both ends."""
        if not self.transport.dynamic_rooms:
            return None
        return frame_channel(True, kind, nsp, to, rooms)

    def stream_of(self, header: Header) -> str:
        if header.to is not None:
            return DIRECT
        if not self.transport.dynamic_rooms:  # every frame but directed ones: one stream
            return BROADCAST
        return frame_channel(True, header.type, header.nsp, None, header.rooms) or BROADCAST

    def accept(self, frame: bytes) -> ParsedFrame | None:
        """The frame's parsed header if it is for this worker and new; raises ``ProtocolError``."""
        parsed = parse_header(frame)
        header = parsed.header
        if header.node == self.node:
            return None  # our own broadcast, echoed by the broker
        if header.to is not None and header.to != self.node:
            return None
        verdict = self.dedupe.check(header.node, self.stream_of(header), header.seq)
        if verdict is Verdict.DUPLICATE:
            return None
        if header.type == MsgType.HEARTBEAT:
            self.heartbeats_received += 1
        else:
            self.received += 1
        return parsed
