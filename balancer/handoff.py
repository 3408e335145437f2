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

A kept-alive polling connection travels the same way (:mod:`balancer.stickiness`),
both ways: ``b"P"`` from the master to the worker whose sessions it carries
(served by the worker's gate, :mod:`worker.gate`), ``b"R"`` from a worker back
to the master when a request on it is not the worker's.  Their line also
carries how many times the connection was given back, and ``a`` when the
first request is a handshake the master already admitted (the worker serves
it though it names no sid of its own); what follows the newline is the
requests already read off it, as :meth:`Request.replay` wrote them.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["POLLING", "RETURNED", "UNREAD", "Passed", "decode_handoff", "decode_passed",
           "encode_handoff", "encode_passed"]

UNREAD = b"h"
_FULL = b"H"
POLLING = b"P"  # master -> worker: a polling connection, for the worker's gate
RETURNED = b"R"  # worker -> master: a connection given back


class Passed(NamedTuple):
    """A polling connection passed with its pending requests: see the docstring."""

    kind: bytes  # POLLING or RETURNED
    data: bytes  # the requests read off it and not answered
    peer: tuple[str, int] | None  # the client a PROXY header named (None: the peer)
    returns: int  # how many times a worker gave it back
    admitted: bool = False  # the first request is a handshake the master admitted


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


def encode_passed(kind: bytes, data: bytes, peer: tuple[str, int] | None, returns: int,
                  *, admitted: bool = False) -> bytes:
    address = f"{peer[0]} {peer[1]}" if peer is not None else "- -"
    flag = " a" if admitted else ""
    return kind + f"{address} {returns}{flag}".encode("ascii") + b"\n" + data


def decode_passed(payload: bytes) -> Passed | None:
    """A POLLING or RETURNED datagram, or None for any other (a plain handoff's)."""
    kind = payload[:1]
    if kind not in (POLLING, RETURNED):
        return None
    line, _, data = payload[1:].partition(b"\n")
    fields = line.decode("ascii", "replace").split(" ")
    admitted = len(fields) == 4 and fields[3] == "a"
    if len(fields) != 3 + admitted or not fields[2].isdigit():
        return None
    address, port, returns = fields[:3]
    peer = None if address == "-" or not port.isdigit() else (address, int(port))
    return Passed(kind, data, peer, int(returns), admitted)
