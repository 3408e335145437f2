"""examples/fastapi-chat, run the way its README says, on a real two-worker cluster.

The same checks as examples/chat (tests/integration/test_example_chat.py, whose
helpers this reuses), plus the REST endpoint, with Socket.IO mounted under /ws.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.clients import disconnect
from tests.cluster import Cluster, free_port, start_cluster
from tests.integration.test_example_chat import (
    BROWSER,
    DevTools,
    Tab,
    blank_page,
    get,
    tabs_on_two_workers,
)

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "fastapi-chat"
PATH = "/ws/socket.io/"


@pytest.fixture(scope="module")
def example() -> Iterator[Cluster]:
    if not (EXAMPLE / "node_modules" / "socket.io-client").is_dir():
        if shutil.which("npm") is None:
            pytest.skip("npm is needed to install the example's client (apt-get install npm)")
        done = subprocess.run(["bash", str(EXAMPLE / "setup.sh")], cwd=EXAMPLE,
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            pytest.fail(f"examples/fastapi-chat/setup.sh failed:\n{done.stdout}\n{done.stderr}",
                        pytrace=False)
    with start_cluster(app="main:app", cwd=EXAMPLE, workers=2) as cluster:
        yield cluster


def announce(url: str, text: Any) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(url + "/api/announce", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_page_client_and_rest_endpoint(example: Cluster) -> None:
    status, ctype, body = get(example.url + "/")
    assert (status, ctype.split(";")[0]) == (200, "text/html")
    assert 'io({ path: "/ws/socket.io/" })' in body.decode()
    status, _, body = get(example.url + "/vendor/socket.io.min.js")
    assert status == 200 and body.startswith(b"/*!\n * Socket.IO v4.")
    assert get(example.url + "/vendor/..%2Fmain.py")[0] == 404
    assert announce(example.url, "")[0] == 422  # FastAPI validates the body

    async def main() -> dict[str, Any]:
        tabs, alice, bob = await tabs_on_two_workers(example.url, PATH)
        try:
            await alice.client.emit("chat message", "hello from alice")
            code, answer = await asyncio.to_thread(announce, example.url, "from REST")
            assert code == 200 and answer["sent"], answer
            return {
                "pids": {alice.pid, bob.pid},
                "bob_got_alice": await bob.wait_for(bob.messages, "hello from alice".__eq__),
                "alice_got_rest": await alice.wait_for(
                    alice.system, "announcement: from REST".__eq__),
                "bob_got_rest": await bob.wait_for(bob.system, "announcement: from REST".__eq__),
            }
        finally:
            await asyncio.gather(*(disconnect(tab.client) for tab in tabs))

    seen = asyncio.run(main())
    assert seen["pids"] == example.worker_pids(), seen
    assert seen["bob_got_alice"] and seen["alice_got_rest"] and seen["bob_got_rest"], seen


@pytest.mark.skipif(BROWSER is None, reason="chromium is not installed (apt-get install chromium)")
def test_browser_page_chats_across_workers(example: Cluster, tmp_path: Path) -> None:
    assert BROWSER is not None
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
            navigation = await page.call("Page.navigate", url=example.url + "/")
            assert "errorText" not in navigation, navigation
            status = await page.wait_for("document.body.dataset.pid && document.getElementById"
                                         "('status').textContent.endsWith('websocket') && "
                                         "document.getElementById('status').textContent")
            browser_pid = int(await page.eval("document.body.dataset.pid"))
            assert status == f"worker pid {browser_pid} · websocket", status

            tabs: list[Tab] = []
            try:
                while not tabs or tabs[-1].pid == browser_pid:
                    assert len(tabs) < 6, f"every tab landed on pid {browser_pid}"
                    tabs.append(await Tab().open(example.url, PATH))
                other = tabs[-1]
                await other.client.emit("chat message", "hello from python")
                await page.wait_for("[...document.querySelectorAll('#messages li')].some((li) =>"
                                    " li.textContent === 'hello from python')")
                await asyncio.to_thread(announce, example.url, "to the browser")
                await page.wait_for("[...document.querySelectorAll('#messages li.system')]"
                                    ".some((li) => li.textContent === "
                                    "'announcement: to the browser')")
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
