from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker import gctune


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


def test_the_youngest_threshold_is_raised_and_the_older_ones_kept() -> None:
    gc.set_threshold(700, 10, 10)
    gctune.tune(10_000)
    assert gc.get_threshold() == (10_000, 10, 10)


def test_zero_keeps_pythons_own() -> None:
    gc.set_threshold(700, 10, 10)
    gctune.tune(0)
    assert gc.get_threshold() == (700, 10, 10)


def test_freezing_moves_the_loaded_objects_out_of_collections() -> None:
    gctune.freeze_loaded(False)
    assert gc.get_freeze_count() == 0
    gctune.freeze_loaded(True)
    assert gc.get_freeze_count() > 1000
