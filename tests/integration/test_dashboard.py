"""/dashboard and the Socket.IO Admin UI on one live 2-worker cluster with a token.

One cluster for the module (``[admin] token`` set, ``socketio_admin_ui`` on): the stream and
the actions need the token; headless Chromium (over the DevTools protocol, as in
test_example_chat) loads the page under light load, is asked for the token, shows both
workers, sees a SIGKILLed worker's restart and its replacement within 2 s, and drains a
worker from its button; the official socket.io-client (Node) logs into the Admin UI's
/admin namespace and hears server_stats from every worker.

The test also takes the README's screenshots (laptop and phone widths).  They go to
tmp_path, or to ``$DASHBOARD_SCREENSHOT_DIR`` when set (``docs`` to refresh the README's).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.cluster import Cluster, free_port, run_cli, start_cluster
from tests.integration.test_example_chat import DevTools, blank_page
from tests.integration.test_js_client import npm_install
from tests.system import missing
from tests.waiting import eventually

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
JS = Path(__file__).resolve().parent.parent / "js"
ROOT = Path(__file__).resolve().parent.parent.parent
TOKEN = "dashboard-test-token-3f9a"
PASSWORD = "admin-ui-test-password-77c1"
CONFIG = f"""
[admin]
token = "{TOKEN}"
socketio_admin_ui = true
socketio_admin_ui_password = "{PASSWORD}"
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(app="dashboard_app:app", workers=2, config=CONFIG, token=TOKEN,
                       tmp_path=tmp_path_factory.mktemp("dashboard")) as running:
        yield running


def http(url: str, *, token: str = "", method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None,
         read: int = -1) -> tuple[int, dict[str, str], bytes]:
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            data = resp.readline() if read == 0 else resp.read()
            return resp.status, dict(resp.headers), data
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_page_is_public_its_stream_and_actions_need_the_token(cluster: Cluster) -> None:
    status, headers, page = http(cluster.admin_url + "/dashboard")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "form-action 'none'" in headers["Content-Security-Policy"]
    assert b"https://" not in page and b"//cdn" not in page, "no CDN: assets ship in the package"
    assert http(cluster.admin_url + "/dashboard/")[2] == page  # redirected
    assert f"dashboard: http://127.0.0.1:{cluster.admin_port}/dashboard" in cluster.log()
    for asset, kind in (("/dashboard/app.js", "application/javascript"),
                        ("/dashboard/app.css", "text/css")):
        status, headers, body = http(cluster.admin_url + asset)
        assert status == 200 and headers["Content-Type"].startswith(kind) and len(body) > 1000

    # No token: no data.
    status, _, body = http(cluster.admin_url + "/dashboard/stream")
    assert status == 401, body
    status, _, body = http(cluster.admin_url + "/dashboard/stream", token="wrong")
    assert status == 401, body
    status, headers, line = http(cluster.admin_url + "/dashboard/stream", token=TOKEN, read=0)
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    first = json.loads(line.decode().removeprefix("data: "))
    pids = {w["pid"] for w in first["status"]["workers"]}
    assert pids == cluster.worker_pids() and len(pids) == 2
    assert first["hosts"][0]["workers_ready"] == 2 and first["points"] and first["events"]
    eventually(lambda: streams(cluster) == 0, 5.0, what="the closed stream is forgotten")

    # Actions: the token, and no cross-site browser POST even with it.
    assert http(cluster.admin_url + "/drain", method="POST", body=b'{"slot": 0}')[0] == 401
    status, _, body = http(cluster.admin_url + "/drain", method="POST", token=TOKEN,
                           body=b'{"slot": 0}', headers={"Origin": "https://evil.example"})
    assert status == 403, body
    for bad, code in ((b'{"slot": "x"}', 400), (b'{"slot": 7}', 404),
                      (b'{"slot": 0, "pid": 1}', 409)):
        assert http(cluster.admin_url + "/drain", method="POST", token=TOKEN, body=bad)[0] == code
    done = run_cli("drain", "7", "--admin-port", str(cluster.admin_port),
                   env={"SIOCLUSTER_ADMIN_TOKEN": TOKEN})
    assert json.loads(done.stdout) == {"error": "no running worker in slot 7"}, done.stderr


def streams(cluster: Cluster) -> float:
    _, _, text = http(cluster.admin_url + "/metrics", token=TOKEN)
    line = next(ln for ln in text.decode().splitlines()
                if ln.startswith("siocluster_dashboard_streams "))
    return float(line.split()[1])


class Load:
    """Light load from tests/loadgen.py, a process of its own: clients in rooms, echoing every
    50 ms until stopped.  Every other client stays on long-polling (``polling``), so the
    proxy's latency has figures too (WebSockets are handed off: the master does not see
    their messages)."""

    def __init__(self, url: str, clients: int = 4, *, polling: bool = True) -> None:
        self.args = [url, "--clients", str(clients), *(["--polling"] if polling else [])]
        self.pids: dict[str, int] = {}  # sid -> worker pid, in client order
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Load:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.loadgen", *self.args, cwd=ROOT,
            stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line, "tests/loadgen.py exited before its clients were connected"
        self.pids = json.loads(line)["sids"]
        return self

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[int]:
    if BROWSER is None:
        missing("chromium is not installed (apt-get install chromium)")
    debug_port = free_port()
    with (tmp_path / "chromium.log").open("w") as log:
        browser = subprocess.Popen(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", f"--remote-debugging-port={debug_port}",
             f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield debug_port
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(5)


async def screenshot(page: DevTools, path: Path, width: int, *, mobile: bool) -> None:
    await page.call("Emulation.setDeviceMetricsOverride", width=width, height=900,
                    deviceScaleFactor=1, mobile=mobile)
    await asyncio.sleep(0.3)  # a re-layout, and the next state message
    height = int(await page.eval("Math.ceil(document.documentElement.scrollHeight)"))
    await page.call("Emulation.setDeviceMetricsOverride", width=width, height=min(height, 4000),
                    deviceScaleFactor=1, mobile=mobile)
    await asyncio.sleep(0.2)
    shot = await page.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))


async def until(page: DevTools, condition: str, timeout_s: float = 30.0) -> Any:
    """Evaluate a JS expression in the page until it is truthy; return it.  Generous: on a
    loaded machine a worker takes seconds to boot; what must be fast is measured on its own."""
    deadline = time.monotonic() + timeout_s
    probe = f"(() => {{ try {{ return ({condition}); }} catch (err) {{ return false; }} }})()"
    while True:
        value = await page.eval(probe)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {condition}")
        await asyncio.sleep(0.05)


def rows_js() -> str:
    return ("[...document.querySelectorAll('#workers tbody tr')].map((tr) => ({slot: "
            "+tr.dataset.slot, pid: +tr.dataset.pid, state: tr.dataset.state, text: "
            "tr.textContent}))")


def test_browser_dashboard_token_workers_restart_and_drain(cluster: Cluster,
                                                            tmp_path: Path) -> None:
    shots = Path(os.environ.get("DASHBOARD_SCREENSHOT_DIR") or tmp_path)
    if not shots.is_absolute():
        shots = ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)

    async def main(debug_port: int) -> dict[str, Any]:
        load = Load(cluster.url)
        seen: dict[str, Any] = {}
        try:
            await load.start()
            seen["load_pids"] = set(load.pids.values())
            async with websockets.connect(await blank_page(debug_port), max_size=None) as ws:
                page = DevTools(ws)
                await page.call("Runtime.enable")
                await page.call("Page.enable")
                navigation = await page.call("Page.navigate", url=cluster.admin_url + "/dashboard")
                assert "errorText" not in navigation, navigation
                # Token required: the page asks for it and shows no data.
                await until(page, "!document.getElementById('login').hidden")
                seen["before_token"] = await page.eval(
                    "({main_hidden: document.getElementById('main').hidden, rows: document."
                    "querySelectorAll('#workers tbody tr').length, url: location.href})")
                await page.eval(f"document.getElementById('token').value = {TOKEN!r};"
                                "document.getElementById('login-form').requestSubmit()")
                await until(page, "document.querySelectorAll('#workers tbody tr').length >= 2"
                                    " && document.getElementById('main').hidden === false")
                pids = cluster.worker_pids()
                await until(page,
                    f"(() => {{ const rows = {rows_js()}; return {sorted(pids)}.every((pid) => "
                    "rows.some((r) => r.pid === pid && r.state === 'ready')); })()")
                await until(page, "+document.getElementById('connections').textContent >= 4")
                await until(page, "+document.getElementById('messages').textContent > 0")
                seen["rows"] = await page.eval(rows_js())
                seen["pids"] = pids
                seen["connections"] = await page.eval(
                    "document.getElementById('connections').textContent")
                seen["url_after_token"] = await page.eval("location.href")

                # SIGKILL one worker: its restart and cause in the events, its
                # replacement in the table, within 2 s.
                victim = next(r for r in seen["rows"] if r["slot"] == 1)
                started = time.monotonic()
                os.kill(victim["pid"], signal.SIGKILL)
                await page.eval(f"""new Promise((resolve, reject) => {{
                    const deadline = Date.now() + 5000;
                    (function poll() {{
                        const events = [...document.querySelectorAll('#events li')]
                            .map((li) => li.textContent);
                        const rows = {rows_js()};
                        const restart = events.some((t) => t.includes('pid {victim["pid"]}')
                            && t.includes('SIGKILL') && t.includes('restart'));
                        const replaced = rows.some((r) => r.slot === 1 && r.pid
                            && r.pid !== {victim["pid"]});
                        if (restart && replaced) resolve(true);
                        else if (Date.now() > deadline) reject(new Error(JSON.stringify(
                            {{events: events.slice(0, 5), rows}})));
                        else setTimeout(poll, 20);
                    }})();
                }})""")
                seen["restart_seen_s"] = time.monotonic() - started
                seen["events"] = await page.eval(
                    "[...document.querySelectorAll('#events li')].map((li) => li.textContent)")
                await until(page,
                    f"(() => {{ const rows = {rows_js()}; return rows.filter((r) => "
                    "r.state === 'ready').length === 2; })()")
                # The load's clients reconnected; a few more points on the charts.
                await until(page, "+document.getElementById('connections').textContent >= 4")
                await asyncio.sleep(1.5)
                await screenshot(page, shots / "dashboard.png", 1280, mobile=False)
                await screenshot(page, shots / "dashboard-phone.png", 390, mobile=True)
                await page.call("Emulation.clearDeviceMetricsOverride")

                # Drain from the page: two clicks (the first asks), then a drain event.
                rows = await page.eval(rows_js())
                slot0 = next(r for r in rows if r["slot"] == 0 and r["state"] == "ready")
                for _ in range(2):
                    await page.eval(f"document.querySelector('#workers tr[data-pid=\"{slot0['pid']}"
                                    "\"] button.drain').click()")
                    await asyncio.sleep(0.1)
                await until(page,
                    f"[...document.querySelectorAll('#events li')].some((li) => li.dataset.kind"
                    f" === 'drain' && li.textContent.includes('pid {slot0['pid']}'))")
                seen["drain_result"] = await page.eval(
                    "document.getElementById('action-result').textContent")
                seen["stored_token"] = await page.eval(
                    "sessionStorage.getItem('siocluster.admin.token')")
                seen["exceptions"] = page.exceptions
                seen["drained_pid"] = slot0["pid"]
        finally:
            await load.stop()
        return seen

    with chromium(tmp_path) as debug_port:
        seen = asyncio.run(main(debug_port))

    assert seen["before_token"]["main_hidden"] and seen["before_token"]["rows"] == 0, seen
    assert seen["before_token"]["url"] == seen["url_after_token"]
    assert TOKEN not in seen["url_after_token"]
    assert len(seen["load_pids"]) == 2, "the load should reach both workers"
    shown = {(r["pid"], r["state"]) for r in seen["rows"]}
    assert {(pid, "ready") for pid in seen["pids"]} <= shown, seen["rows"]
    assert int(seen["connections"]) >= 4, seen
    print(f"SIGKILL to restart event and replacement row on the page: "
          f"{seen['restart_seen_s']:.2f} s")
    assert seen["restart_seen_s"] < 2.0, seen
    assert seen["drain_result"] == "drain: accepted", seen
    assert seen["stored_token"] == TOKEN  # this tab's sessionStorage, nowhere else
    assert seen["exceptions"] == [], seen["exceptions"]
    for name in ("dashboard.png", "dashboard-phone.png"):
        png = (shots / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000, name
    assert TOKEN not in cluster.log(), "the token must never be logged"
    eventually(lambda: seen["drained_pid"] not in cluster.worker_pids(), 15.0,
               what="the drained worker exits")
    eventually(lambda: streams(cluster) == 0, 5.0, what="the browser's stream is forgotten")
    cluster.wait_ready(2)


@pytest.fixture(scope="module")
def admin_ui_client() -> list[str]:
    npm_install(JS)
    node = shutil.which("node")
    assert node is not None
    return [node, str(JS / "admin_ui.mjs")]


def test_admin_ui_sees_every_worker_and_every_socket(cluster: Cluster,
                                                     admin_ui_client: list[str]) -> None:
    workers = cluster.wait_ready(2)

    async def node(*args: str) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            *admin_ui_client, cluster.url, *args, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, err.decode()
        return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]

    async def main() -> dict[str, Any]:
        load = Load(cluster.url, polling=False)  # a vanished long-poll slows the teardown
        try:
            await load.start()
            refused = await node("--timeout-ms", "5000")
            wrong = await node("--password", "nope", "--timeout-ms", "5000")
            admitted = await node("--password", PASSWORD, "--servers", "2",
                                  "--timeout-ms", "10000", "--join", "vip")
            # The UI's "join" reached sockets on both workers (the cluster manager).
            after = await node("--password", PASSWORD, "--timeout-ms", "10000")
        finally:
            await load.stop()
        return {"refused": refused, "wrong": wrong, "admitted": admitted, "after": after,
                "load": load.pids}

    seen = asyncio.run(main())
    for key in ("refused", "wrong"):
        assert not seen[key]["connected"] and seen[key]["error"] == "authentication failed", seen
        assert seen[key]["servers"] == {}, seen
    admitted = seen["admitted"]
    assert admitted["connected"] and admitted["error"] is None, admitted
    assert "JOIN" in admitted["config"]["supportedFeatures"]
    by_pid = {stats["pid"]: server for server, stats in admitted["servers"].items()}
    assert set(by_pid) == {w["pid"] for w in workers}, admitted["servers"]
    assert all(f"/worker-{w['slot']}/{w['pid']}" in by_pid[w["pid"]] for w in workers)
    sockets = {(s["nsp"], s["id"]): s for s in admitted["sockets"]}
    assert len(set(seen["load"].values())) == 2, "the load should reach both workers"
    for i, sid in enumerate(seen["load"]):
        socket_ = sockets.get(("/", sid))
        assert socket_ is not None, f"socket {sid} missing from all_sockets: {sorted(sockets)}"
        assert f"room-{i}" in socket_["rooms"], socket_
    rooms = {s["id"]: s["rooms"] for s in seen["after"]["sockets"] if s["nsp"] == "/"}
    assert all("vip" in rooms[sid] for sid in seen["load"]), rooms
    assert PASSWORD not in cluster.log()
