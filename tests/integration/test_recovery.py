"""Connection-state recovery with the official socket.io-client (Node), default options.

30 receivers in a room get a numbered stream from a sender that retries what is not
acknowledged (tests/js/recovery.mjs; the app is tests/apps/recovery_app.py).  One cluster
(2 workers, local backend, a 10 s window) serves the first two tests, a second one (1 worker,
a 2 s window) the last:

* kill -9 the worker holding the most receivers: every reconnection is recovered (same id,
  ``socket.recovered``), and no acknowledged number is missed;
* a SIGHUP roll under the same load: the same;
* a client offline shorter than the window is recovered; one offline longer gets a fresh
  session (new id, ``recovered`` false), never a partial replay; so does one whose missed
  packets were trimmed from the log by size (``max_log_bytes``), counted ``trimmed``;
* a 600-session connect storm during a roll loses none; a reader that reads nothing is
  closed at ``max_outbound_bytes``; python-socketio's clients get no offsets.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster import Cluster, start_cluster
from tests.eio import EIO_PATH, handshake, poll, post, ws_call
from tests.integration.test_js_client import JS, npm_install
from tests.waiting import eventually

WINDOW_S = 10.0  # generous: a loaded CI machine slows reconnections down
SHORT_WINDOW_S = 2.0
SHORT_LOG_BYTES = 100_000
OUTBOUND_CAP = 1_000_000
STORM_SESSIONS = 600
STORM_PACE_S = 0.005  # one new session every 5 ms: the storm lasts about 3 s
CLIENTS = 30
NODE_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    npm_install(JS)
    env = {"SIOCLUSTER_RECOVERY_MAX_DISCONNECTION_S": str(WINDOW_S),
           "SIOCLUSTER_ADAPTER_BACKEND": "local",
           "SIOCLUSTER_HEALTH_DRAIN_SPREAD_S": os.environ.get("TEST_DRAIN_SPREAD_S", "1.0"),
           "SIOCLUSTER_LIMITS_MAX_OUTBOUND_BYTES": str(OUTBOUND_CAP)}
    with start_cluster("recovery_app:app", workers=2, env=env,
                       tmp_path=tmp_path_factory.mktemp("recovery")) as c:
        yield c


@pytest.fixture(scope="module")
def short_window_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"SIOCLUSTER_RECOVERY_MAX_DISCONNECTION_S": str(SHORT_WINDOW_S),
           "SIOCLUSTER_RECOVERY_MAX_LOG_BYTES": str(SHORT_LOG_BYTES),
           "SIOCLUSTER_ADAPTER_BACKEND": "local"}
    with start_cluster("recovery_app:app", workers=1, env=env,
                       tmp_path=tmp_path_factory.mktemp("recovery-short")) as c:
        yield c


def node(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["node", str(JS / "recovery.mjs"), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_json(proc: subprocess.Popen[str], timeout: float = NODE_TIMEOUT_S) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"node printed nothing within {timeout}s:\n{err}")
    return json.loads(line)  # type: ignore[no-any-return]


def recovery_status(cluster: Cluster) -> dict[str, Any]:
    return cluster.status()["recovery"]  # type: ignore[no-any-return]


def rolled(cluster: Cluster, old: set[int]) -> None:
    """Wait until two ready workers serve and none of ``old`` is left."""

    def done() -> bool:
        workers = cluster.status()["workers"]
        return (len(workers) == 2 and all(w["state"] == "ready" for w in workers)
                and not {w["pid"] for w in workers} & old)

    eventually(done, timeout_s=30, what="the roll to finish")


def run_stream(cluster: Cluster, disrupt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    before = recovery_status(cluster)
    proc = node("stream", cluster.url, "--clients", str(CLIENTS))
    try:
        ready = read_json(proc)
        assert ready["event"] == "ready", ready
        disrupt({int(pid): n for pid, n in ready["pids"].items()})
        assert proc.stdin is not None
        proc.stdin.write("finish\n")
        proc.stdin.flush()
        done = read_json(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert done["event"] == "done", f"{done}\n{cluster.log()[-3000:]}"
    return done, before


def check_everyone_recovered(done: dict[str, Any], disrupted: int,
                             before: dict[str, Any], after: dict[str, Any], *,
                             exact: bool = True) -> None:
    """``exact``: the counters are the master's (local); with redis they are the
    workers', and a killed worker's are gone with it."""
    assert done["errors"] == [], done["errors"]
    receivers = done["receivers"]
    assert done["acked"] >= 30, done
    reconnected = [r for r in receivers if r["connects"] > 1]
    assert len(reconnected) >= disrupted, (disrupted, receivers)
    for r in receivers:
        assert r["not_recovered"] == 0, r
        assert r["recovered"] == r["connects"] - 1, r
        assert r["same_id"], r
        assert r["missed_count"] == 0, r
    for w in done["whoami"]:
        assert "stream" in w["rooms"], w
        assert w["name"] is not None, w  # the session data came back
    if exact:
        assert after["recovered"] - before["recovered"] >= len(reconnected), (before, after)
        assert after["not_recovered"] == before["not_recovered"], (before, after)


def test_kill_9_worker_every_client_recovers(cluster: Cluster) -> None:
    killed: dict[str, int] = {}

    def kill(pids: dict[int, int]) -> None:
        victim = max(pids, key=lambda p: pids[p])
        killed.update(pid=victim, receivers=pids[victim])
        os.kill(victim, signal.SIGKILL)
        cluster.wait_ready(2, exclude_pids={victim})

    done, before = run_stream(cluster, kill)
    after = recovery_status(cluster)
    check_everyone_recovered(done, killed["receivers"], before, after)
    assert after["replayed"] >= before["replayed"], after
    assert after["log_entries"] > 0 and after["log_bytes"] > 0, after
    _code, metrics = cluster.admin("/metrics")
    recovered = next(line for line in metrics.splitlines()
                     if line.startswith('siocluster_recovery_recovered_total{backend="local"}'))
    assert float(recovered.split()[-1]) == after["recovered"], recovered
    assert "siocluster_recovery_log_oldest_age_s" in metrics


def test_sighup_roll_every_client_recovers(cluster: Cluster) -> None:
    moved: dict[str, int] = {}

    def roll(pids: dict[int, int]) -> None:
        old = cluster.worker_pids()
        moved["receivers"] = sum(pids.values())
        cluster.proc.send_signal(signal.SIGHUP)
        rolled(cluster, old)

    done, before = run_stream(cluster, roll)
    after = recovery_status(cluster)
    check_everyone_recovered(done, moved["receivers"], before, after)


def test_offline_longer_than_the_window_gets_a_fresh_session(
        short_window_cluster: Cluster) -> None:
    cluster = short_window_cluster
    before = recovery_status(cluster)
    proc = node("offline", cluster.url, "--short-ms", "500",
                "--long-ms", str(int((SHORT_WINDOW_S + 1.5) * 1000)))
    try:
        done = read_json(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert done["event"] == "done", done
    assert done["errors"] == [], done["errors"]
    short, long = done["receivers"]
    assert short["recovered"] == 1 and short["same_id"] and short["missed_count"] == 0, short
    assert long["recovered"] == 0 and long["not_recovered"] == 1, long
    assert not long["same_id"], long
    assert done["whoami"][1]["recovered"] is False
    assert "stream" in done["whoami"][1]["rooms"]  # a fresh connect: the handler ran again
    after = recovery_status(cluster)
    # "expired" when the attempt finds it past its window, "unknown" once the once-a-second
    # trim has already dropped it.
    fresh = sum(after["not_recovered"].get(k, 0) - before["not_recovered"].get(k, 0)
                for k in ("expired", "unknown"))
    assert fresh == 1, (before, after)


def ws_url(base: str, sid: str) -> str:
    return base.replace("http", "ws", 1) + f"{EIO_PATH}?EIO=4&transport=websocket&sid={sid}"


async def storm_during_roll(cluster: Cluster) -> dict[str, Any]:
    """STORM_SESSIONS clients do the polling handshake, CONNECT, the WebSocket upgrade and
    one ack while a SIGHUP roll drains the workers they land on."""
    failures: dict[str, list[str]] = {"handshake": [], "connect": [], "upgrade": []}
    moved = ok = 0
    pids: list[int] = []
    base = cluster.url
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(i: int) -> None:
            nonlocal moved, ok
            await asyncio.sleep(i * STORM_PACE_S)  # paced, so that the roll lands mid-storm
            if True:
                try:
                    sid = (await handshake(http, base))["sid"]
                except Exception as exc:
                    failures["handshake"].append(f"{i}: {exc!r}")
                    return
                try:
                    assert await post(http, base, sid, "40") == 200
                    status, text = await poll(http, base, sid)
                    assert status == 200 and text.startswith("40"), (status, text)
                except Exception as exc:
                    failures["connect"].append(f"{i}: {exc!r}")
                    return
                try:
                    ws = await http.ws_connect(ws_url(base, sid))
                    await ws.send_str("2probe")
                    msg = await ws.receive(timeout=10)
                    assert msg.data == "3probe", msg
                    await ws.send_str("5")
                except Exception as exc:
                    failures["upgrade"].append(f"{i}: {exc!r}")
                    return
                try:
                    pids.append((await ws_call(ws, "whoami"))["pid"])
                    ok += 1
                except Exception:
                    moved += 1  # upgraded, then closed by the drain: its client reconnects
                await ws.close()

        old = cluster.worker_pids()
        cluster.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # start as the first replacement comes up
            if any(w["state"] == "ready" and w["pid"] not in old
                   for w in cluster.status()["workers"]):
                break
            await asyncio.sleep(0.05)
        tasks = [asyncio.create_task(one(i)) for i in range(STORM_SESSIONS)]
        await asyncio.gather(*tasks)
    return {"failures": failures, "moved": moved, "ok": ok, "pids": pids}


def test_connect_storm_during_a_roll_loses_no_session(cluster: Cluster) -> None:
    old = cluster.worker_pids()
    result = asyncio.run(storm_during_roll(cluster))
    rolled(cluster, old)
    by_old = sum(1 for p in result["pids"] if p in old)
    print(f"storm during a roll: {result['ok']} answered ({by_old} by the old workers), "
          f"{result['moved']} closed by the drain after their upgrade")
    assert 0 < by_old < STORM_SESSIONS, "the roll did not overlap the storm"
    for kind, failed in result["failures"].items():
        assert failed == [], f"{len(failed)} {kind} failures: {failed[:5]}"
    assert result["ok"] + result["moved"] == STORM_SESSIONS
    assert cluster.status()["balancer"]["session_unknown_400"] == 0


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def slow_reader(cluster: Cluster, count: int, size: int,
                      closed: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Flood a reader that reads nothing from a sender on the other worker: the RSS of
    the reader's worker and of the sender's, before and after."""
    base = cluster.url
    async with aiohttp.ClientSession() as http:
        sid = (await handshake(http, base))["sid"]
        assert await post(http, base, sid, '40{"role":"flooded"}') == 200
        _status, text = await poll(http, base, sid)
        assert text.startswith("40"), text
        # A reader that never reads: nothing is consumed after the upgrade.
        ws = await http.ws_connect(ws_url(base, sid), max_msg_size=0)
        await ws.send_str("2probe")
        assert (await ws.receive(timeout=10)).data == "3probe"
        await ws.send_str("5")
        pid = (await ws_call(ws, "whoami"))["pid"]
        rss_before = vm_rss(pid)
        # The sender on the other worker, so that the reader's worker holds only what
        # it holds for the reader, and the sender's only what its emits hold on
        # their way to the master.  New sessions go to the least-loaded worker:
        # the ones that land on the reader's stay open until one lands on the other.
        extra = []
        for _ in range(100):
            sender_sid = (await handshake(http, base))["sid"]
            assert await post(http, base, sender_sid, "40") == 200
            await poll(http, base, sender_sid)
            sender = await http.ws_connect(ws_url(base, sender_sid))
            await sender.send_str("2probe")
            await sender.receive(timeout=10)
            await sender.send_str("5")
            if (await ws_call(sender, "whoami"))["pid"] != pid:
                break
            extra.append(sender)
        else:
            raise AssertionError("every new session landed on the reader's worker")
        for other in extra:
            await other.close()
        sender_pid = (await ws_call(sender, "whoami"))["pid"]
        sender_before = vm_rss(sender_pid)
        assert await ws_call(sender, "flood", count, size) == count
        sender_after = vm_rss(sender_pid)
        # The reader stays connected (and reads nothing) until the worker closed it.
        await asyncio.to_thread(eventually, closed, 10.0, 0.1, "the overflow in a heartbeat")
        rss_after = vm_rss(pid)
        await sender.close()
        await ws.close()
    return (rss_before, rss_after), (sender_before, sender_after)


def test_a_slow_reader_is_closed_at_the_outbound_cap(cluster: Cluster) -> None:
    def overflows() -> int:
        return sum(w.get("guards", {}).get("outbound_overflow", 0)
                   for w in cluster.status()["workers"])

    before = overflows()
    flood = 200 * 100_000  # 20 MB to one reader that reads nothing; the cap is 1 MB
    (rss_before, rss_after), (sender_before, sender_after) = asyncio.run(
        slow_reader(cluster, 200, 100_000, lambda: overflows() == before + 1))
    grown = rss_after - rss_before
    sent = sender_after - sender_before
    print(f"slow reader: worker RSS grew {grown / 1e6:.1f} MB for a {flood / 1e6:.0f} MB flood; "
          f"the sender's worker's {sent / 1e6:.1f} MB")
    assert grown < flood / 2, grown
    # The sender's emits wait for the control channel to the master (backpressure):
    # they do not pile up in its buffer.
    assert sent < flood / 4, sent


async def flood_past_a_stopped_worker(cluster: Cluster, count: int, size: int,
                                      stop_s: float | None) -> float:
    """Flood from one worker while the other is SIGSTOPped (for ``stop_s``, or all
    along): the seconds the flood's emits took."""
    base = cluster.url
    async with aiohttp.ClientSession() as http:
        sid = (await handshake(http, base))["sid"]
        assert await post(http, base, sid, "40") == 200
        await poll(http, base, sid)
        ws = await http.ws_connect(ws_url(base, sid))
        await ws.send_str("2probe")
        assert (await ws.receive(timeout=10)).data == "3probe"
        await ws.send_str("5")
        pid = (await ws_call(ws, "whoami"))["pid"]
        other = next(w["pid"] for w in cluster.status()["workers"] if w["pid"] != pid)
        os.kill(other, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        resume = None if stop_s is None else loop.call_later(
            stop_s, os.kill, other, signal.SIGCONT)
        started = time.monotonic()
        try:
            assert await ws_call(ws, "flood", count, size) == count
        finally:
            if resume is not None:
                resume.cancel()
            os.kill(other, signal.SIGCONT)
        took = time.monotonic() - started
        await ws.close()
    return took


def test_a_lagging_worker_paces_the_log_and_a_hung_one_is_left_behind(
        cluster: Cluster) -> None:
    """The master stops reading emits while a worker has not taken over 1 MB of the
    log, for at most 2 s per worker (supervisor/channel.py)."""
    pids = {w["pid"] for w in cluster.status()["workers"]}
    before = recovery_status(cluster)
    # Stopped for 1 s: the flood (10 MB) waits for it.
    paused = asyncio.run(flood_past_a_stopped_worker(cluster, 100, 100_000, 1.0))
    mid = recovery_status(cluster)
    # Stopped all along: waited for 2 s, then left behind.
    hung = asyncio.run(flood_past_a_stopped_worker(cluster, 100, 100_000, None))
    after = recovery_status(cluster)
    print(f"lagging worker: the flood took {paused:.2f} s past a 1 s stop, "
          f"{hung:.2f} s past a hung worker; waits {after['lag_waits'] - before['lag_waits']}")
    assert mid["lag_waits"] > before["lag_waits"]
    assert mid["lag_timeouts"] == before["lag_timeouts"]
    assert paused >= 0.8, "the flood did not wait for the stopped worker"
    assert after["lag_timeouts"] == mid["lag_timeouts"] + 1
    assert 1.8 <= hung < 8.0
    # Nobody was replaced: the waits held no heartbeat up for long.
    assert {w["pid"] for w in cluster.status()["workers"]} == pids
    assert {w["state"] for w in cluster.status()["workers"]} == {"ready"}


async def python_clients(url: str) -> tuple[list[Any], list[Any]]:
    import socketio

    plain, opted_in = socketio.AsyncClient(), socketio.AsyncClient()
    got: dict[str, list[Any]] = {"plain": [], "in": []}
    plain.on("tick", lambda *args: got["plain"].append(list(args)))
    opted_in.on("tick", lambda *args: got["in"].append(list(args)))
    await plain.connect(url, auth={"role": "receiver", "name": "py"})
    await opted_in.connect(url, auth={"role": "receiver", "name": "py2",
                                      "siocluster_offsets": True})
    assert await plain.call("publish", 7) == 7
    for _ in range(50):
        if got["plain"] and got["in"]:
            break
        await asyncio.sleep(0.05)
    await plain.disconnect()
    await opted_in.disconnect()
    return got["plain"], got["in"]


def test_python_socketio_clients_get_events_without_offsets(cluster: Cluster) -> None:
    plain, opted_in = asyncio.run(python_clients(cluster.url))
    assert plain == [[7]]  # the offset would be a second argument
    assert len(opted_in) == 1 and opted_in[0][0] == 7 and isinstance(opted_in[0][1], str)


async def flood_log(url: str) -> None:
    import socketio

    client = socketio.AsyncClient()
    await client.connect(url)
    # 250 KB to a room nobody is in: the log (100 KB) drops everything older.
    assert await client.call("flood", (5, 50_000)) == 5
    await client.disconnect()


def test_missed_packets_trimmed_by_size_mean_a_fresh_session(
        short_window_cluster: Cluster) -> None:
    cluster = short_window_cluster
    before = recovery_status(cluster)["not_recovered"].get("trimmed", 0)
    proc = node("trimmed", cluster.url)
    try:
        assert read_json(proc)["event"] == "offline"
        asyncio.run(flood_log(cluster.url))
        assert proc.stdin is not None
        proc.stdin.write("back\n")
        proc.stdin.flush()
        done = read_json(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert done["event"] == "done" and done["errors"] == [], done
    r = done["receiver"]
    assert r["recovered"] == 0 and r["not_recovered"] == 1 and not r["same_id"], r
    assert done["whoami"]["recovered"] is False and "stream" in done["whoami"]["rooms"]
    status = recovery_status(cluster)
    assert status["not_recovered"].get("trimmed", 0) == before + 1, status
    assert status["trimmed_size"] > 0 and status["log_bytes"] <= SHORT_LOG_BYTES, status
