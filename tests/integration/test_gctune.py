"""The workers' garbage collector is tuned as configured (worker/gctune.py)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from tests.cluster import start_cluster


def _gc(port: int) -> list[int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/pid", timeout=10) as answer:
        figures: list[int] = json.loads(answer.read())["gc"]
    return figures


def test_workers_raise_the_young_threshold_and_freeze_the_loaded_app(tmp_path: Path) -> None:
    with start_cluster(workers=1, tmp_path=tmp_path) as cluster:
        threshold0, _, _, frozen = _gc(cluster.port)
        assert threshold0 == 10_000
        assert frozen > 10_000, "the app and its libraries are frozen"


def test_zero_and_false_leave_pythons_collector_alone(tmp_path: Path) -> None:
    env = {"SIOCLUSTER_CLUSTER_GC_THRESHOLD": "0", "SIOCLUSTER_CLUSTER_GC_FREEZE": "false"}
    with start_cluster(workers=1, tmp_path=tmp_path, env=env) as cluster:
        assert _gc(cluster.port) == [700, 10, 10, 0]
