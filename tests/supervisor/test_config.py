from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from supervisor.config import (
    Config,
    config_from_dict,
    config_to_dict,
    keep_restart_only,
    load_config,
    redact_url,
    reloaded,
)
from supervisor.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    c = load_config(None, env={})
    assert c == Config()
    assert c.balancer.port == 8000 and c.admin.host == "127.0.0.1"
    assert c.limits.max_message_bytes == 1_000_000


def test_repo_config_toml_documents_every_key_with_its_default() -> None:
    data = tomllib.loads((ROOT / "config.toml").read_text())
    assert config_from_dict(data, "config.toml") == Config()
    documented = {(s, k) for s, values in data.items() for k in values}
    expected = {(s, k) for s, values in config_to_dict(Config()).items() for k in values}
    assert documented == expected


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[health]\nheartbeat_timeout_s = 5\n[balancer]\nport = 9000\n")
    env = {"SIOCLUSTER_HEALTH_HEARTBEAT_TIMEOUT_S": "2", "SIOCLUSTER_BALANCER_PORT": "9100"}
    c = load_config(path, env=env, overrides={"balancer": {"port": 9200}})
    assert c.health.heartbeat_timeout_s == 2.0
    assert c.balancer.port == 9200
    c = load_config(path, env={})
    assert c.balancer.port == 9000 and c.health.heartbeat_timeout_s == 5.0


def test_env_types() -> None:
    c = load_config(None, env={"SIOCLUSTER_CLUSTER_PIN_CPUS": "true",
                               "SIOCLUSTER_BALANCER_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
                               "PATH": "/bin"})
    assert c.cluster.pin_cpus is True
    assert c.balancer.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")


@pytest.mark.parametrize(("text", "needles"), [
    ("[health]\nheartbeat_timeout = 3\n", ["health.heartbeat_timeout", "heartbeat_timeout_s"]),
    ("[helth]\n", ["[helth]", "health"]),
    ("[balancer]\nport = \"80\"\n", ["balancer.port", "integer"]),
    ("[balancer]\nport = -1\n", ["balancer.port", "negative"]),
    ("[cluster]\npin_cpus = 1\n", ["cluster.pin_cpus", "true or false"]),
    ("[cluster]\ngc_threshold = -5\n", ["cluster.gc_threshold", "negative"]),
    ("[adapter]\nbackend = \"redys\"\n", ["adapter.backend", "'redis'"]),
    ("[cluster\n", ["invalid TOML"]),
    ("cluster = 3\n", ["[cluster] must be a table"]),
    ("[cluster]\nsingleton_lease_s = 0\n", ["cluster.singleton_lease_s", "more than 0"]),
])
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str,
                                               needles: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_bad_env() -> None:
    with pytest.raises(ConfigError, match=r"SIOCLUSTER_HEALTH_HEARTBEAT_TIMEOUT.*did you mean"):
        load_config(None, env={"SIOCLUSTER_HEALTH_HEARTBEAT_TIMEOUT": "2"})
    with pytest.raises(ConfigError, match=r"SIOCLUSTER_BALANCER_PORT.*integer"):
        load_config(None, env={"SIOCLUSTER_BALANCER_PORT": "eighty"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})
    assert load_config(tmp_path / "nope.toml", env={}, path_required=False) == Config()


def test_redaction() -> None:
    assert redact_url("redis://:hunter2@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://u:hunter2@h/0") == "redis://u:***@h/0"
    assert redact_url("redis://h:6379") == "redis://h:6379"
    c = config_from_dict({"admin": {"token": "s3cret"},
                          "adapter": {"redis_url": "redis://:pw@h/0"}})
    text = str(config_to_dict(c, redact=True))
    assert "s3cret" not in text and "pw@" not in text


def test_zero_workers_means_one_per_core() -> None:
    import os

    assert Config().effective_workers() == (os.cpu_count() or 1)
    assert load_config(None, env={"SIOCLUSTER_CLUSTER_WORKERS": "3"}).effective_workers() == 3


def test_session_cap_from_env_and_negative_refused() -> None:
    env = {"SIOCLUSTER_LIMITS_MAX_SESSIONS_PER_IP": "5"}
    assert load_config(None, env=env).limits.max_sessions_per_ip == 5
    with pytest.raises(ConfigError, match=r"MAX_SESSIONS_PER_IP: must not be negative"):
        load_config(None, env={"SIOCLUSTER_LIMITS_MAX_SESSIONS_PER_IP": "-1"})


def test_bad_trusted_proxy_is_named() -> None:
    with pytest.raises(ConfigError, match=r"balancer.trusted_proxies: '\[10.0.0.1\]' is not"):
        load_config(None, env={"SIOCLUSTER_BALANCER_TRUSTED_PROXIES": "[10.0.0.1]"})
    env = {"SIOCLUSTER_BALANCER_TRUSTED_PROXIES": "10.0.0.0/8, ::1"}
    assert load_config(None, env=env).balancer.trusted_proxies == ("10.0.0.0/8", "::1")


def test_reload_keeps_what_only_a_restart_changes() -> None:
    old = load_config(None, env={})
    env = {"SIOCLUSTER_BALANCER_PORT": "9000", "SIOCLUSTER_LIMITS_MAX_SESSIONS_PER_IP": "3",
           "SIOCLUSTER_LIMITS_EVENT_RATE_PER_SOCKET": "5", "SIOCLUSTER_HEALTH_MAX_RSS_MB": "512"}
    effective, kept = keep_restart_only(old, load_config(None, env=env))
    assert sorted(kept) == ["balancer.port", "limits.max_sessions_per_ip"]
    assert effective.balancer.port == old.balancer.port
    assert effective.limits.max_sessions_per_ip == 0
    assert effective.limits.event_rate_per_socket == 5  # the workers take it
    assert effective.health.max_rss_mb == 512
    assert keep_restart_only(old, old) == (old, [])
    # The master grants @singleton leases by it: old and new workers must agree.
    env = {"SIOCLUSTER_CLUSTER_SINGLETON_LEASE_S": "2",
           "SIOCLUSTER_CLUSTER_GRACEFUL_TIMEOUT_S": "3"}
    effective, kept = keep_restart_only(old, load_config(None, env=env))
    assert kept == ["cluster.singleton_lease_s"]
    assert effective.cluster.singleton_lease_s == 5.0 and effective.cluster.graceful_timeout_s == 3



def test_a_reload_keeps_a_runtime_scale_unless_the_configured_count_changed() -> None:
    old = config_from_dict({"cluster": {"workers": 2}})
    same = config_from_dict({"cluster": {"workers": 2}, "health": {"max_rss_mb": 64}})
    new, desired, kept = reloaded(old, same, 5)  # scaled to 5 at run time
    assert (desired, kept, new.health.max_rss_mb) == (5, [], 64)
    _new, desired, _kept = reloaded(old, config_from_dict({"cluster": {"workers": 3}}), 5)
    assert desired == 3
    moved = config_from_dict({"cluster": {"workers": 2}, "balancer": {"port": 9000}})
    new, desired, kept = reloaded(old, moved, 2)
    assert (desired, kept, new.balancer.port) == (2, ["balancer.port"], old.balancer.port)

MULTI = {"cluster": {"advertise": "10.0.0.5:8000", "peer_token": "p" * 32},
         "adapter": {"backend": "redis"}}


def _refusal(data: dict[str, dict[str, object]]) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, "c.toml")
    return str(caught.value)


def test_multi_host_mode_needs_redis_and_a_long_token() -> None:
    config = config_from_dict(MULTI, "c.toml")
    assert config.cluster.advertise == "10.0.0.5:8000"
    local = {**MULTI, "adapter": {"backend": "local"}}
    message = _refusal(local)
    assert "cluster.advertise" in message and "adapter.backend" in message, message
    message = _refusal({**MULTI, "cluster": {"advertise": "10.0.0.5:8000"}})
    assert "cluster.peer_token" in message and "SIOCLUSTER_CLUSTER_PEER_TOKEN" in message
    message = _refusal({**MULTI, "cluster": {"advertise": "h:1", "peer_token": "short"}})
    assert "at least 32" in message and "short" not in message.split("got")[0], message
    for bad in ("nohost", "h:70000", ":80", "h:x"):
        message = _refusal({**MULTI, "cluster": {"advertise": bad, "peer_token": "p" * 32}})
        assert "cluster.advertise" in message and "HOST:PORT" in message, message
    message = _refusal({**MULTI, "cluster": {**MULTI["cluster"], "host_id": "Bad_Id"}})
    assert "cluster.host_id" in message and "a-z" in message
    assert "cluster.advertise" in _refusal({"cluster": {"host_id": "h1"}})


def test_host_ids_and_advertise_forms() -> None:
    from supervisor.config import derived_host_id, parse_advertise

    assert parse_advertise("[2001:db8::1]:8000") == ("2001:db8::1", 8000)
    assert parse_advertise("app-0.svc:8000") == ("app-0.svc", 8000)
    first = derived_host_id("10.0.0.5:8000")
    assert first == derived_host_id("10.0.0.5:8000") != derived_host_id("10.0.0.6:8000")
    assert len(first) == 6 and set(first) <= set("abcdefghijklmnopqrstuvwxyz0123456789")


def test_peer_token_is_a_secret() -> None:
    doc = config_to_dict(config_from_dict(MULTI, "c.toml"), redact=True)
    assert doc["cluster"]["peer_token"] == "***"


def test_the_admin_ui_needs_a_password_or_the_token_and_the_worker_gets_the_secret() -> None:
    with pytest.raises(ConfigError, match=r"needs admin\.socketio_admin_ui_password"):
        config_from_dict({"admin": {"socketio_admin_ui": True}}, "c.toml")
    by_token = config_from_dict({"admin": {"socketio_admin_ui": True, "token": "t"}})
    assert by_token.for_worker().socketio_admin_ui_secret == "t"
    by_password = config_from_dict({"admin": {"socketio_admin_ui": True, "token": "t",
                                              "socketio_admin_ui_password": "p"}})
    worker = by_password.for_worker()
    assert (worker.socketio_admin_ui, worker.socketio_admin_ui_secret) == (True, "p")
    assert Config().for_worker().socketio_admin_ui_secret == ""  # off: no secret sent
    assert "'p'" not in str(config_to_dict(by_password, redact=True))
