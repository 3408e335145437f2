"""A broker's outages: counted once each, the overflow warned once per outage."""

from __future__ import annotations

import logging

import pytest

from worker.adapter.buffer import OutageBuffer
from worker.adapter.outage import Outages


def test_outages_and_reconnects_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outages("redis", OutageBuffer(max_age_s=None, max_bytes=None),
                     logging.getLogger("test"))
    outage.ended()  # the first connect is no reconnect
    assert (outage.outages, outage.reconnects) == (0, 0)
    with caplog.at_level(logging.WARNING):
        outage.began()
        outage.buffer_frame(b"x", None)
        outage.ended()
    assert (outage.outages, outage.reconnects) == (1, 1)
    assert "redis is unreachable" in caplog.text
    assert "redis is back after" in caplog.text and "1 frames buffered" in caplog.text


def test_a_full_buffer_is_warned_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outages("rabbitmq", OutageBuffer(max_age_s=None, max_bytes=10),
                     logging.getLogger("test"))
    with caplog.at_level(logging.WARNING):
        outage.began()
        for _ in range(5):
            outage.buffer_frame(b"0123456789", None)
        assert caplog.text.count("outage buffer full") == 1
        outage.ended()
        outage.began()
        outage.buffer_frame(b"0123456789", None)
    assert caplog.text.count("outage buffer full") == 2
    assert outage.buffer.overflowed >= 5
