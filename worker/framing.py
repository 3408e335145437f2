"""One length-prefixed framing for the worker's two stream channels.

The control channel to the master (:mod:`worker.control`) and the local
adapter's mesh between workers (:mod:`worker.adapter.local`) both send
frames as a 4-byte big-endian length followed by that many bytes.

* :func:`pack` frames a body;
* :class:`FrameDecoder` is the pure part: bytes in, whole bodies out, a
  frame over ``max_bytes`` refused before its body is read;
* :class:`FrameReader` is the thin asyncio shell: it reads what the stream
  has and feeds the decoder, handing out one body at a time.
"""

from __future__ import annotations

import asyncio
import collections
import struct

__all__ = ["FrameDecoder", "FrameReader", "FrameTooLarge", "TruncatedFrame", "pack"]

_LEN = struct.Struct(">I")
_READ_BYTES = 256 * 1024


class FrameTooLarge(Exception):
    """A frame announced more bytes than the channel allows."""


class TruncatedFrame(Exception):
    """The stream ended in the middle of a frame."""


def pack(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Accumulate bytes; return the complete bodies."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self._buffer = bytearray()
        self._max = max_bytes

    @property
    def pending(self) -> int:
        """Bytes held that do not make a whole frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) >= _LEN.size:
            (length,) = _LEN.unpack_from(self._buffer)
            if self._max is not None and length > self._max:
                raise FrameTooLarge(f"frame of {length} bytes exceeds {self._max}")
            end = _LEN.size + length
            if len(self._buffer) < end:
                break
            out.append(bytes(self._buffer[_LEN.size:end]))
            del self._buffer[:end]
        return out


class FrameReader:
    """Bodies from a stream, one per :meth:`next`; None at a clean end."""

    def __init__(self, reader: asyncio.StreamReader, max_bytes: int | None = None) -> None:
        self._reader = reader
        self._decoder = FrameDecoder(max_bytes)
        self._ready: collections.deque[bytes] = collections.deque()

    async def next(self) -> bytes | None:
        """The next body; None when the stream ends between frames.

        Raises :class:`TruncatedFrame` when it ends inside one, and
        :class:`FrameTooLarge` for an oversized frame.
        """
        while not self._ready:
            data = await self._reader.read(_READ_BYTES)
            if not data:
                if self._decoder.pending:
                    raise TruncatedFrame(f"stream ended {self._decoder.pending} bytes into a "
                                         "frame")
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()
