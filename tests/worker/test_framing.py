"""The one length-prefixed framing: the pure decoder and the stream reader over it."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.framing import FrameDecoder, FrameReader, FrameTooLarge, TruncatedFrame, pack


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 64))
def test_bodies_survive_any_split(bodies: list[bytes], step: int) -> None:
    wire = b"".join(pack(b) for b in bodies)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(0, len(wire), step):
        out += decoder.feed(wire[i:i + step])
    assert out == bodies and decoder.pending == 0


def test_an_oversized_frame_is_refused_before_its_body() -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_bytes=10).feed(b"\x00\x00\x00\x0b")


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_the_reader_hands_out_frames_then_none_at_a_clean_end() -> None:
    async def main() -> None:
        frames = FrameReader(_reader(pack(b"one") + pack(b"") + pack(b"three")))
        assert [await frames.next() for _ in range(4)] == [b"one", b"", b"three", None]

    asyncio.run(main())


def test_the_reader_says_when_the_stream_ends_inside_a_frame() -> None:
    async def main() -> None:
        frames = FrameReader(_reader(pack(b"whole") + pack(b"cut short")[:6]))
        assert await frames.next() == b"whole"
        with pytest.raises(TruncatedFrame):
            await frames.next()

    asyncio.run(main())
