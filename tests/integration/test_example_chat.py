"""examples/chat, run the way its README says, on a real two-worker cluster.

The fixture installs the example's npm package (the official browser client that chat.py serves
from /vendor/) when node_modules is missing, as examples/chat/setup.sh does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
import websockets

from tests.clients import disconnect
from tests.cluster import Cluster, free_port, start_cluster
from tests.system import missing

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
CHAT = Path(__file__).resolve().parent.parent.parent / "examples" / "chat"
WAIT_S = 5.0


@pytest.fixture(scope="module")
def chat_installed() -> Path:
    if (CHAT / "node_modules" / "socket.io-client").is_dir():
        return CHAT
    if shutil.which("npm") is None:
        missing("npm is needed to install the chat example's client (apt-get install npm)")
    done = subprocess.run(["bash", str(CHAT / "setup.sh")], cwd=CHAT, capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.fail(f"examples/chat/setup.sh failed with exit code {done.returncode}; run it by "
                    f"hand to see why.\n{done.stdout}\n{done.stderr}", pytrace=False)
    return CHAT


@pytest.fixture(scope="module")
def chat(chat_installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(app="chat:app", cwd=chat_installed, workers=2,
                       tmp_path=tmp_path_factory.mktemp("chat"),
                       env={"CHAT_CONNECTIONS_EVERY_S": "0.3"}) as cluster:
        yield cluster


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def test_page_and_vendored_client_are_served(chat: Cluster) -> None:
    status, ctype, body = get(chat.url + "/")
    assert (status, ctype.split(";")[0]) == (200, "text/html")
    page = body.decode()
    assert '<script src="/vendor/socket.io.min.js"></script>' in page
    assert "//cdn" not in page and "https://" not in page, "the page must not load from a CDN"

    status, ctype, body = get(chat.url + "/vendor/socket.io.min.js")
    assert (status, ctype) == (200, "application/javascript")
    assert body.startswith(b"/*!\n * Socket.IO v4."), body[:40]
    assert len(body) > 20_000

    for path in ("/vendor/nope.js", "/vendor/..%2Fchat.py", "/vendor/%2E%2E%2Fpackage.json"):
        assert get(chat.url + path)[0] == 404, path


class Tab:
    """One python-socketio client that records what the page would show."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.messages: list[str] = []
        self.system: list[str] = []
        self.pid = 0
        self.client.on("chat message", self.messages.append)
        self.client.on("system", self.system.append)
        self.counts: list[dict[str, Any]] = []
        self.client.on("connections", self.counts.append)

    async def open(self, url: str, path: str = "socket.io") -> Tab:
        await self.client.connect(url, wait_timeout=10, socketio_path=path)
        who: dict[str, Any] = await self.client.call("whoami", timeout=10)
        self.pid = who["pid"]
        return self

    async def wait_for(self, box: list[str], predicate: Any) -> bool:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not any(predicate(item) for item in box):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


async def tabs_on_two_workers(url: str, path: str = "socket.io") -> tuple[list[Tab], Tab, Tab]:
    """Open tabs until two sit on different workers (new sessions go to the least loaded)."""
    tabs: list[Tab] = []
    for _ in range(6):
        tabs.append(await Tab().open(url, path))
        by_pid = {tab.pid: tab for tab in tabs}
        if len(by_pid) == 2:
            first, second = by_pid.values()
            return tabs, first, second
    raise AssertionError(f"every tab landed on one worker: {[t.pid for t in tabs]}")


def test_chat_message_reaches_tabs_on_both_workers(chat: Cluster) -> None:
    async def main() -> dict[str, Any]:
        tabs, alice, bob = await tabs_on_two_workers(chat.url)
        try:
            await alice.client.emit("chat message", "hello from alice")
            await bob.client.emit("chat message", "hello from bob")
            return {
                "pids": (alice.pid, bob.pid),
                "local": await alice.wait_for(alice.messages, "hello from alice".__eq__),
                "alice_got_bob": await alice.wait_for(alice.messages, "hello from bob".__eq__),
                "bob_got_alice": await bob.wait_for(bob.messages, "hello from alice".__eq__),
                "alice_saw_join": await alice.wait_for(
                    alice.system, lambda line: line.startswith("someone joined")),
                "alice": alice.messages, "bob": bob.messages,
            }
        finally:
            await asyncio.gather(*(disconnect(tab.client) for tab in tabs))

    seen = asyncio.run(main())
    assert seen["pids"][0] != seen["pids"][1]
    assert seen["pids"][0] in chat.worker_pids() and seen["pids"][1] in chat.worker_pids()
    assert seen["local"], f"the sender's own worker did not echo the broadcast: {seen}"
    assert seen["bob_got_alice"] and seen["alice_got_bob"], (
        f"a broadcast did not cross workers: {seen}")
    assert seen["alice_saw_join"], f"no 'someone joined' line across workers: {seen}"


def test_one_worker_announces_the_cluster_connection_count(chat: Cluster) -> None:
    """The singleton counts tabs on both workers, and only one worker announces."""

    async def main() -> list[dict[str, Any]]:
        tabs, _alice, _bob = await tabs_on_two_workers(chat.url)
        try:
            tab = tabs[0]
            assert await tab.wait_for(tab.counts, lambda c: c["count"] == len(tabs)), tab.counts
            seen = len(tab.counts)
            await asyncio.sleep(1.0)  # a few more announcements, at 0.3 s
            return tab.counts[seen:]
        finally:
            await asyncio.gather(*(disconnect(tab.client) for tab in tabs))

    counts = asyncio.run(main())
    assert 2 <= len(counts) <= 5, counts
    assert len({c["announcer_pid"] for c in counts}) == 1, counts
    assert counts[-1]["workers"] == 2 and counts[-1]["announcer_pid"] in chat.worker_pids()
    [single] = chat.status()["singletons"]
    assert single["name"] == "chat-connections" and single["holder"] is not None


# A real browser: headless Chromium, driven over the DevTools protocol with `websockets`.


class DevTools:
    """The few DevTools calls this test needs, on one page target."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.last_id = 0
        self.exceptions: list[Any] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        await self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 15))
            if message.get("method") == "Runtime.exceptionThrown":
                self.exceptions.append(message["params"]["exceptionDetails"])
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]  # type: ignore[no-any-return]

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, condition: str) -> Any:
        """Poll a JS expression in the page until it is truthy (the page may still be loading)."""
        return await self.eval(f"""new Promise((resolve, reject) => {{
            const deadline = Date.now() + {WAIT_S * 1000}, source = {condition!r};
            (function poll() {{
                let value, error = "";
                try {{ value = ({condition}); }} catch (err) {{ error = " (" + err + ")"; }}
                if (value) resolve(value);
                else if (Date.now() > deadline) reject(new Error(`timeout: ${{source}}${{error}}`));
                else setTimeout(poll, 20);
            }})();
        }})""")


async def blank_page(debug_port: int) -> str:
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(OSError, ValueError):
            _, _, body = await asyncio.to_thread(get, f"http://127.0.0.1:{debug_port}/json/list")
            for target in json.loads(body):
                if target["type"] == "page" and target["url"] == "about:blank":
                    return str(target["webSocketDebuggerUrl"])
        await asyncio.sleep(0.1)
    raise AssertionError("chromium opened no blank page")


def test_browser_page_chats_across_workers(chat: Cluster, tmp_path: Path) -> None:
    if BROWSER is None:
        missing("chromium is not installed (apt-get install chromium)")
    debug_port = free_port()
    with (tmp_path / "chromium.log").open("w") as log:
        browser = subprocess.Popen(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", f"--remote-debugging-port={debug_port}",
             f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    async def main() -> None:
        async with websockets.connect(await blank_page(debug_port), max_size=None) as ws:
            page = DevTools(ws)
            await page.call("Runtime.enable")
            # Navigate only now: evaluating in a page that is still loading races its reload.
            navigation = await page.call("Page.navigate", url=chat.url + "/")
            assert "errorText" not in navigation, navigation
            # The page shows its worker once whoami answers, and its transport once upgraded.
            status = await page.wait_for("document.body.dataset.pid && document.getElementById"
                                         "('status').textContent.endsWith('websocket') && "
                                         "document.getElementById('status').textContent")
            browser_pid = int(await page.eval("document.body.dataset.pid"))
            assert browser_pid in chat.worker_pids(), status
            assert status == f"worker pid {browser_pid} · websocket", status
            online = await page.wait_for("document.getElementById('online').textContent")
            assert online.endswith("online · 2 workers"), online

            tabs: list[Tab] = []
            try:
                while not tabs or tabs[-1].pid == browser_pid:
                    assert len(tabs) < 6, f"every tab landed on pid {browser_pid}"
                    tabs.append(await Tab().open(chat.url))
                other = tabs[-1]
                await page.wait_for("[...document.querySelectorAll('#messages li.system')]"
                                    ".some((li) => li.textContent.startsWith('someone joined'))")

                markup = "<b>hello</b> from python"
                await other.client.emit("chat message", markup)
                await page.wait_for(f"[...document.querySelectorAll('#messages li')].some((li) =>"
                                    f" li.textContent === {markup!r} && !li.children.length)")

                await page.eval("document.getElementById('input').value = 'hello from chromium';"
                                "document.getElementById('form').requestSubmit()")
                assert await other.wait_for(other.messages, "hello from chromium".__eq__), (
                    f"the browser's message did not reach pid {other.pid}: {other.messages}")
            finally:
                await asyncio.gather(*(disconnect(tab.client) for tab in tabs))
            assert page.exceptions == []

    try:
        asyncio.run(main())
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(5)
