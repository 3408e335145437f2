"""The emitter's message building, against python-socketio's own (no broker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import config_from_dict
from supervisor.emitter import Emitter, _http_body, pubsub_message
from tests.worker.adapter.test_external import wire
from worker.adapter.external import parse_message


@pytest.mark.parametrize("emit", [
    {"data": 42},
    {"data": (1, "two"), "room": "r", "skip_sid": "s"},
    {"data": {"blob": b"\x00\x01", "n": [b"x"]}, "to": ["a", "b"], "namespace": "/chat"},
    {"data": None},
])
def test_pubsub_message_is_python_socketios(emit: dict[str, Any]) -> None:
    theirs = json.loads(wire(**dict(emit)))
    room = emit.get("to") or emit.get("room")
    ours = pubsub_message("ev", emit.get("data"), namespace=emit.get("namespace"), room=room,
                          skip_sid=emit.get("skip_sid"), host_id=theirs["host_id"])
    assert json.loads(json.dumps(ours)) == theirs
    assert parse_message(json.dumps(ours).encode()) == parse_message(wire(**dict(emit)))


def test_http_body() -> None:
    assert json.loads(_http_body("e", (1, 2), None, ["a", "b"], "s")) == {
        "event": "e", "namespace": "/", "args": [1, 2], "rooms": ["a", "b"], "except": "s"}
    assert json.loads(_http_body("e", {"x": 1}, "/n", "r", ["s", "t"])) == {
        "event": "e", "namespace": "/n", "data": {"x": 1}, "room": "r", "except": ["s", "t"]}
    with pytest.raises(TypeError, match="binary"):
        _http_body("e", {"b": b"x"}, None, None, None)
    with pytest.raises(TypeError, match="JSON"):
        _http_body("e", object(), None, None, None)


def test_from_config_picks_the_way_from_the_backend(tmp_path: Path) -> None:
    def via(adapter: dict[str, Any], **admin: Any) -> Emitter:
        return Emitter.from_config(config_from_dict({"adapter": adapter, "admin": admin}))

    assert via({"backend": "local"}).via == "http"
    assert via({"backend": "none"}).via == "http"
    assert via({"backend": "redis"}).via == "redis"
    assert via({"backend": "redis", "emitter_channel": ""}).via == "http"
    assert via({"backend": "amqp"}).via == "amqp"
    e = via({"backend": "local"}, host="0.0.0.0", port=9001, token="t")
    assert (e.admin_url, e.token) == ("http://127.0.0.1:9001", "t")
    e = via({"backend": "amqp", "channel": "c", "emitter_channel": "x"})
    assert e.amqp["queue"] == "c.emit" and e.channel == "x"
    path = tmp_path / "c.toml"
    path.write_text('[adapter]\nbackend = "redis"\n')
    assert Emitter.from_config(path, env={}).via == "redis"
    assert Emitter.from_config(path, env={"SIOCLUSTER_ADAPTER_BACKEND": "local"}).via == "http"
