"""What travels with a client socket passed to a worker.  Pure.

The master passes a client's file descriptor over the worker's
``SOCK_SEQPACKET`` handoff socket (``SCM_RIGHTS``), one datagram per socket.
The datagram says two things the descriptor cannot:

* the request head, when the master has already read it off the socket (an
  upgrade on a kept-alive connection); empty when the head is still unread
  (the front door only peeked at it);
* the client's address, when it is not the socket's peer (the PROXY
  protocol named it); ``None`` keeps the peer.

The common case, an unread head from the socket's own peer, is the single
byte ``b"h"``.  Otherwise: ``b"H"``, the address and port (``-`` for none),
a newline, then the head.
"""

from __future__ import annotations

__all__ = ["UNREAD", "decode_handoff", "encode_handoff"]

UNREAD = b"h"
_FULL = b"H"


def encode_handoff(head: bytes, peer: tuple[str, int] | None) -> bytes:
    if not head and peer is None:
        return UNREAD
    address = f"{peer[0]} {peer[1]}" if peer is not None else "- -"
    return _FULL + address.encode("ascii") + b"\n" + head


def decode_handoff(payload: bytes) -> tuple[bytes, tuple[str, int] | None]:
    """The head (empty: unread) and the client's address (None: the peer)."""
    if payload == UNREAD or not payload.startswith(_FULL):
        return b"", None
    line, _, head = payload[1:].partition(b"\n")
    address, _, port = line.decode("ascii", "replace").partition(" ")
    if address == "-" or not port.isdigit():
        return head, None
    return head, (address, int(port))
