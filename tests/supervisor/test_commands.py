from __future__ import annotations

import signal

from supervisor.commands import SIGNALS, Reload, Scale, ScaleBy, Stop, scaled


def test_every_signal_is_a_command() -> None:
    assert SIGNALS[signal.SIGTERM] == SIGNALS[signal.SIGINT] == Stop()
    assert SIGNALS[signal.SIGHUP] == Reload()
    assert SIGNALS[signal.SIGTTIN] == ScaleBy(1)
    assert SIGNALS[signal.SIGTTOU] == ScaleBy(-1)


def test_scale_never_goes_below_one_worker() -> None:
    assert scaled(2, ScaleBy(1)) == 3
    assert scaled(1, ScaleBy(-1)) == 1
    assert scaled(4, Scale(2)) == 2
    assert scaled(4, Scale(0)) == 1
