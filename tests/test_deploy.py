"""examples/deploy, checked without Docker, Kubernetes or systemd.

Each file is parsed and its commands are handed to the real ``siocluster run``
argument parser and :func:`~supervisor.config.load_config`, so a renamed flag or
config key breaks this test rather than a deployment.  Two checks run for real:
the Dockerfile's CMD and HEALTHCHECK outside a container (from the repo's
examples/chat, with the image's environment), and the Grafana dashboard's metric
names against the /metrics of a live cluster.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from supervisor.cli import _OVERRIDES, _parser
from supervisor.config import Config, config_to_dict, load_config
from tests.cluster import SIOCLUSTER, free_port, run_cli, start_cluster

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples" / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes.yaml"
UNIT = DEPLOY / "siocluster.service"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
DEFAULTS = Config()
ENV_NAME = re.compile(r"SIOCLUSTER_[A-Z0-9_]*[A-Z0-9]")
METRIC_NAME = re.compile(r"siocluster_[a-z0-9_]+")


# Parsing helpers


def dockerfile_stage(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) of the last stage, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        pending = ""
        instructions.append((keyword.upper(), rest.strip()))
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "no FROM in the Dockerfile"
    return instructions[starts[-1]:]


def last(stage: list[tuple[str, str]], keyword: str) -> str | None:
    values = [rest for k, rest in stage if k == keyword]
    return values[-1] if values else None


def exec_form(rest: str, what: str) -> list[str]:
    try:
        argv = json.loads(rest)
    except ValueError:
        pytest.fail(f"{what} is in shell form ({rest!r}): use exec form, a JSON list, so "
                    "signals reach the process itself", pytrace=False)
    assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv), rest
    return argv


def image_parts(stage: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    entrypoint, cmd = last(stage, "ENTRYPOINT"), last(stage, "CMD")
    return (exec_form(entrypoint, "ENTRYPOINT") if entrypoint else [],
            exec_form(cmd, "CMD") if cmd else [])


def image_command(stage: list[tuple[str, str]]) -> list[str]:
    entrypoint, cmd = image_parts(stage)
    return entrypoint + cmd


def image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword != "ENV":
            continue
        words = shlex.split(rest)
        if "=" not in words[0]:  # legacy form: ENV NAME value
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def parse_run(argv: list[str]) -> Any:
    """``siocluster run ...`` parsed by the real CLI parser."""
    assert Path(argv[0]).name == "siocluster", f"not the siocluster CLI: {argv}"
    try:
        args = _parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"the siocluster parser rejects {argv[1:]}", pytrace=False)
    assert args.command == "run", argv
    return args


def effective_config(argv: list[str], env: Mapping[str, str]) -> Config:
    """The config ``argv`` would run with under ``env``, with no config file."""
    args = parse_run(argv)
    overrides: dict[str, dict[str, Any]] = {}
    for attr, (section, key) in _OVERRIDES.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return load_config(None, env=env, overrides=overrides)


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def default_env_value(name: str) -> str:
    """A value of the right type for the config key ``name`` names ("" if none)."""
    for section, values in config_to_dict(DEFAULTS).items():
        for key, value in values.items():
            if f"SIOCLUSTER_{section}_{key}".upper() == name:
                if isinstance(value, bool):
                    return str(value).lower()
                if isinstance(value, list):
                    return ",".join(value)
                return str(value)
    return ""


@pytest.fixture(scope="module")
def stage() -> list[tuple[str, str]]:
    return dockerfile_stage(DOCKERFILE.read_text())


# Dockerfile


def test_dockerfile_runs_siocluster_in_exec_form(stage: list[tuple[str, str]]) -> None:
    argv = image_command(stage)
    args = parse_run(argv)
    assert args.app, "the CMD names no app"
    config = effective_config(argv, image_env(stage))
    assert not is_loopback(config.balancer.host), "the balancer must listen beyond loopback"
    # The app module is copied into the directory the app is resolved from.
    workdir = (last(stage, "WORKDIR") or "/").rstrip("/")
    module = args.app.split(":")[0].replace(".", "/") + ".py"
    copied = [shlex.split(rest) for keyword, rest in stage if keyword == "COPY"]
    assert any(words[-1].rstrip("/") == workdir and any(w.endswith(module) for w in words[:-1])
               for words in copied), f"{module} is not copied into WORKDIR {workdir}"
    assert last(stage, "STOPSIGNAL") == "SIGTERM"


def test_dockerfile_user_is_not_root(stage: list[tuple[str, str]]) -> None:
    user = last(stage, "USER")
    assert user, "no USER: the image would run as root"
    assert user.split(":")[0] not in ("root", "0"), user


def test_dockerfile_exposes_and_probes_the_configured_ports(
    stage: list[tuple[str, str]],
) -> None:
    config = effective_config(image_command(stage), image_env(stage))
    exposed = {int(p.split("/")[0]) for p in (last(stage, "EXPOSE") or "").split()}
    assert {config.balancer.port, config.admin.port} <= exposed, exposed
    healthcheck = last(stage, "HEALTHCHECK")
    assert healthcheck, "no HEALTHCHECK"
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", healthcheck)
    assert match, healthcheck
    probe = " ".join(exec_form(match.group(2), "HEALTHCHECK CMD"))
    assert "/health" in probe and "127.0.0.1" in probe, probe
    # The probe reads SIOCLUSTER_ADMIN_PORT like the CLI does; its fallback is the
    # port the image's CMD and ENV give the admin listener.
    assert f"'{config.admin.port}'" in probe or f":{config.admin.port}/" in probe, probe
    assert "curl" not in probe and "wget" not in probe, "the slim image has neither"


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[Any]:
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_dockerfile_cmd_and_healthcheck_work_outside_a_container(
    stage: list[tuple[str, str]], tmp_path: Path
) -> None:
    """The image's CMD from examples/chat, with its ENV; ports moved by env, as a user would."""
    argv = image_command(stage)
    workdir = Path(last(stage, "WORKDIR") or "/")
    cwd = ROOT / workdir.relative_to("/app")  # /app mirrors the repo layout
    port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIOCLUSTER_")}
    env |= {k: v for k, v in image_env(stage).items() if k.startswith("SIOCLUSTER_")}
    env |= {"SIOCLUSTER_BALANCER_PORT": str(port), "SIOCLUSTER_ADMIN_PORT": str(admin_port)}
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", last(stage, "HEALTHCHECK") or "")
    assert match
    probe = exec_form(match.group(2), "HEALTHCHECK CMD")
    assert probe[0] == "python"
    probe = [sys.executable, *probe[1:]]

    def healthy() -> bool:
        done = subprocess.run(probe, env=env, capture_output=True, timeout=10, check=False)
        return done.returncode == 0

    log = tmp_path / "cluster.log"
    with running([*SIOCLUSTER, *argv[1:]], env, cwd, log) as proc:
        deadline = time.monotonic() + 40
        while not healthy():
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"never healthy:\n{log.read_text()}"
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)  # docker stop
        assert proc.wait(DEFAULTS.cluster.graceful_timeout_s + 10) == 0, log.read_text()
    assert not healthy(), "the HEALTHCHECK passes with nothing listening"


# Kubernetes


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    import yaml
    docs = [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "Service"}
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return of_kind(docs, "Deployment")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(docs)["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def container_env(c: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = f"from-secret-{ref['name']}-{ref['key']}"
    return env


def k8s_config(docs: list[dict[str, Any]], stage: list[tuple[str, str]]) -> Config:
    """command replaces the image's ENTRYPOINT, args its CMD; env adds to its ENV."""
    c = container(docs)
    entrypoint, cmd = image_parts(stage)
    if "command" in c:
        entrypoint, cmd = c["command"], []
    if "args" in c:
        cmd = c["args"]
    return effective_config([*entrypoint, *cmd], {**image_env(stage), **container_env(c)})


def named_ports(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def test_kubernetes_ports_match_the_config(
    manifests: list[dict[str, Any]], stage: list[tuple[str, str]]
) -> None:
    config = k8s_config(manifests, stage)  # ConfigError for a bad env name or value
    ports = named_ports(container(manifests))
    assert ports["http"] == config.balancer.port
    assert ports["admin"] == config.admin.port
    assert not is_loopback(config.balancer.host)
    service = of_kind(manifests, "Service")["spec"]
    assert service["selector"].items() <= of_kind(manifests, "Deployment")["spec"]["template"][
        "metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["ports"]} <= {"http", config.balancer.port}


def test_kubernetes_admin_is_open_only_with_a_token_from_a_secret(
    manifests: list[dict[str, Any]], stage: list[tuple[str, str]]
) -> None:
    config = k8s_config(manifests, stage)
    if is_loopback(config.admin.host):
        return
    token = [e for e in container(manifests)["env"] if e["name"] == "SIOCLUSTER_ADMIN_TOKEN"]
    assert token and "secretKeyRef" in token[0].get("valueFrom", {}), \
        "a non-loopback admin host needs SIOCLUSTER_ADMIN_TOKEN from a Secret"
    # What the manifest relies on: without the token the CLI refuses to start.
    done = run_cli("run", "echo_app:app", env={"SIOCLUSTER_ADMIN_HOST": config.admin.host})
    assert done.returncode == 2, done.stderr
    assert "token" in done.stderr


def test_kubernetes_probes_hit_health_on_the_admin_port(
    manifests: list[dict[str, Any]], stage: list[tuple[str, str]]
) -> None:
    c = container(manifests)
    admin = k8s_config(manifests, stage).admin.port
    assert {"livenessProbe", "readinessProbe"} <= c.keys()
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        if name not in c:
            continue
        get = c[name]["httpGet"]
        assert get["path"] == "/health", name
        port = get["port"]
        assert (named_ports(c)[port] if isinstance(port, str) else port) == admin, name
    # A pod whose workers are restarting is not killed at once.
    liveness = c["livenessProbe"]
    assert liveness.get("failureThreshold", 3) * liveness.get("periodSeconds", 10) >= 30


def test_kubernetes_grace_period_outlasts_the_drain(
    manifests: list[dict[str, Any]], stage: list[tuple[str, str]]
) -> None:
    spec = pod_spec(manifests)
    grace = spec["terminationGracePeriodSeconds"]
    pre_stop = container(manifests).get("lifecycle", {}).get("preStop", {})
    sleep = int(pre_stop["exec"]["command"][-1]) if "exec" in pre_stop else 0
    graceful = max(DEFAULTS.cluster.graceful_timeout_s,
                   k8s_config(manifests, stage).cluster.graceful_timeout_s)
    assert grace > sleep + graceful, (grace, sleep, graceful)


def test_kubernetes_workers_match_the_cpu_limit(
    manifests: list[dict[str, Any]], stage: list[tuple[str, str]]
) -> None:
    limit = str(container(manifests)["resources"]["limits"]["cpu"])
    cpus = int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
    workers = k8s_config(manifests, stage).cluster.workers
    assert workers and workers == cpus, f"{workers} workers for a cpu limit of {limit}"


# Every SIOCLUSTER_* variable in examples/deploy, comments included


def test_every_env_var_names_a_config_key() -> None:
    names = set()
    for path in DEPLOY.iterdir():
        if path.is_file():
            names |= set(ENV_NAME.findall(path.read_text()))
    names.discard("SIOCLUSTER_CONFIG")  # the config file path, not a key
    assert names
    for name in sorted(names):
        load_config(None, env={name: default_env_value(name)})  # ConfigError if unknown


def test_env_values_given_are_valid(stage: list[tuple[str, str]]) -> None:
    load_config(None, env=image_env(stage))
    load_config(None, env=unit_environment(UNIT.read_text()))


# systemd


def unit_values(text: str, section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``[section]`` (systemd allows repeated keys)."""
    values, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(f"{key}="):
            values.append(line.partition("=")[2])
    return values


def unit_environment(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit_values(text, "Service", "Environment"):
        for word in shlex.split(value):
            name, _, val = word.partition("=")
            env[name] = val
    return env


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value.strip())
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


def test_systemd_unit() -> None:
    text = UNIT.read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    service = unit["Service"]
    assert service["Type"] in ("simple", "exec")
    argv = shlex.split(service["ExecStart"])
    assert argv[0].startswith("/"), "systemd wants an absolute ExecStart path"
    parse_run(argv)
    assert shlex.split(service["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] in ("mixed", "main")
    assert seconds(service["TimeoutStopSec"]) > DEFAULTS.cluster.graceful_timeout_s
    assert service["Restart"] == "on-failure"
    assert {"2", "3"} <= set(service["RestartPreventExitStatus"].split())
    assert service["User"] not in ("root", "0")
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes"
    # With a read-only file system the workers' sockets go in the RuntimeDirectory.
    runtime = service["RuntimeDirectory"]
    env = unit_environment(text)
    assert env["SIOCLUSTER_CLUSTER_RUNTIME_DIR"] in (f"/run/{runtime}", f"%t/{runtime}")
    assert unit["Install"]["WantedBy"]


# Grafana


@pytest.fixture(scope="module")
def exposed_metrics(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every metric name a live cluster's /metrics exposes, adapter included."""
    with start_cluster(workers=1, env={"SIOCLUSTER_ADAPTER_BACKEND": "local"},
                       tmp_path=tmp_path_factory.mktemp("metrics")) as cluster:
        # One Engine.IO session, so the proxy histogram has observations; closed
        # again (packet "1") so the stop does not wait for it to drain.
        url = f"{cluster.url}/socket.io/?EIO=4&transport=polling"
        with urllib.request.urlopen(url, timeout=5) as resp:
            sid = json.loads(resp.read()[1:])["sid"]
        close = urllib.request.Request(f"{url}&sid={sid}", data=b"1", method="POST")
        with urllib.request.urlopen(close, timeout=5) as resp:
            assert resp.status == 200
        deadline = time.monotonic() + 10
        while True:
            code, text = cluster.admin("/metrics")
            assert code == 200, text
            if "siocluster_adapter_" in text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    doc = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in doc["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return panels


def test_dashboard_is_a_grafana_dashboard() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert 36 <= doc["schemaVersion"] <= 41
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    source = variables["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    panels = dashboard_panels()
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()


def test_dashboard_metrics_exist(exposed_metrics: set[str]) -> None:
    used = set()
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            used |= set(METRIC_NAME.findall(target["expr"]))
    doc = json.loads(DASHBOARD.read_text())
    for variable in doc["templating"]["list"]:
        used |= set(METRIC_NAME.findall(json.dumps(variable.get("query", ""))))
    adapter_running = any(n.startswith("siocluster_adapter_") for n in exposed_metrics)
    missing = sorted(
        name for name in used - exposed_metrics
        if adapter_running or not name.startswith("siocluster_adapter_")
    )
    assert not missing, f"not in /metrics: {missing}"
    assert "siocluster_proxy_request_seconds_bucket" in used


# Several hosts: Kubernetes with a plain Service, compose with round-robin nginx

KUBERNETES_MULTI = DEPLOY / "kubernetes-multihost.yaml"
COMPOSE_MULTI = DEPLOY / "compose-multihost.yaml"
NGINX_RR = DEPLOY / "nginx-roundrobin.conf"


def k8s_env(c: dict[str, Any], pod_ip: str) -> dict[str, str]:
    """The container's env as the kubelet makes it: secrets, fieldRefs, $(VAR) expanded."""
    env: dict[str, str] = {}
    for item in c.get("env", []):
        if "value" in item:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], str(item["value"]))
        elif "fieldRef" in item["valueFrom"]:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", item
            value = pod_ip
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            value = f"secret-{ref['name']}-{ref['key']}".ljust(32, "x")
        env[item["name"]] = value
    return env


def test_kubernetes_multihost_needs_no_affinity_and_configures_multi_host_mode(
    stage: list[tuple[str, str]],
) -> None:
    import yaml
    docs = [d for d in yaml.safe_load_all(KUBERNETES_MULTI.read_text()) if d]
    apps = [d for d in docs if d["kind"] == "Deployment"
            and d["metadata"]["name"] == "siocluster-chat"]
    [deployment] = apps
    assert deployment["spec"]["replicas"] >= 2
    services = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Service"}
    assert services["siocluster-chat"].get("sessionAffinity", "None") == "None"
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    secrets = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert "SIOCLUSTER_CLUSTER_PEER_TOKEN" in secrets, "the peer token comes from a Secret"
    entrypoint, cmd = image_parts(stage)
    configs = [effective_config([*entrypoint, *cmd], {**image_env(stage), **k8s_env(c, ip)})
               for ip in ("10.1.0.7", "10.1.0.8")]
    first, second = configs
    assert first.cluster.advertise == f"10.1.0.7:{first.balancer.port}"
    assert first.adapter.backend == "redis" and not is_loopback(first.balancer.host)
    assert first.host_id() != second.host_id(), "each pod its own host id"
    redis_host = first.adapter.redis_url.split("//")[1].split(":")[0]
    assert redis_host in services, f"{redis_host} is not a Service of the manifest"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == first.balancer.port


def test_compose_multihost_round_robin_nginx(stage: list[tuple[str, str]]) -> None:
    import yaml
    doc = yaml.safe_load(COMPOSE_MULTI.read_text())
    services = doc["services"]
    hosts = {name: s for name, s in services.items() if name.startswith("h")}
    assert len(hosts) == 3
    entrypoint, cmd = image_parts(stage)
    ids = set()
    for name, service in hosts.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        env["SIOCLUSTER_CLUSTER_PEER_TOKEN"] = "t" * 64  # from the shell, ${...:?}
        config = effective_config([*entrypoint, *cmd], {**image_env(stage), **env})
        assert config.cluster.advertise == f"{name}:{config.balancer.port}"
        ids.add(config.host_id())
    assert len(ids) == 3, "host ids are unique"
    conf = NGINX_RR.read_text()
    code = "\n".join(line.split("#")[0] for line in conf.splitlines())
    for sticky in ("ip_hash", "sticky", "hash ", "least_conn"):
        assert sticky not in code, f"{sticky} in nginx-roundrobin.conf: it must be round-robin"
    upstream = re.search(r"upstream\s+\w+\s*{([^}]*)}", code)
    assert upstream, "no upstream block"
    servers = re.findall(r"server\s+([\w.-]+):(\d+);", upstream.group(1))
    assert {s for s, _p in servers} == set(hosts)
    assert {int(p) for _s, p in servers} == {config.balancer.port}
    assert "proxy_set_header Upgrade $http_upgrade" in code
    assert "proxy_http_version 1.1" in code
    nginx = services["nginx"]
    assert any(v.endswith("nginx-roundrobin.conf:/etc/nginx/conf.d/default.conf:ro")
               for v in nginx["volumes"])
