"""The Dockerfile, compose file and Kubernetes manifests parse, and reference only images,
ports, paths, settings and command-line flags that exist.

Containers cannot run on this machine (no container engine), so this is what can be checked
here: every flag against ``adaptd <command> --help``, every URI through its connector's own
option validation, every ``ADAPTD_*`` variable and TOML file through the settings loader,
every port and path against the place that defines it.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from adaptd.config import load_settings
from tests.deploy.conftest import DEPLOY, REPO, adaptd_env

COMPOSE = DEPLOY / "compose.yaml"
REPLICAS = ("adaptd-1", "adaptd-2", "adaptd-3")
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes"
URI_FLAGS = {"--source": "source", "--sink": "sink", "--dead-letter": "sink"}


# --- shared checks ---------------------------------------------------------------------------

@functools.cache
def cli_flags(command: str) -> frozenset[str]:
    """The long options ``adaptd COMMAND --help`` lists."""
    result = subprocess.run([sys.executable, "-m", "adaptd", command, "--help"], cwd=REPO,
                            env=adaptd_env(), capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, f"adaptd {command} --help failed:\n{result.stderr}"
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout))


def flag_values(args: list[str]) -> dict[str, str | None]:
    """``--flag value`` / ``--flag=value`` / bare ``--flag`` → {flag: value or None}."""
    out: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        flag, sep, value = arg.partition("=")
        if sep:
            out[flag] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[flag] = args[i + 1]
        else:
            out[flag] = None
    return out


def check_command(command: str, args: list[str]) -> dict[str, str | None]:
    """Every flag exists for ``adaptd COMMAND`` and every URI passes its connector's checks."""
    flags = flag_values(args)
    unknown = sorted(set(flags) - cli_flags(command))
    assert not unknown, f"flags not accepted by `adaptd {command}`: {unknown}"
    for flag, role in URI_FLAGS.items():
        if flags.get(flag):
            check_uri(str(flags[flag]), role)
    return flags


def check_uri(uri: str, role: str) -> None:
    """Builds the source or sink options exactly as the daemon would (without connecting)."""
    from adaptd.connectors.base import parse_uri

    scheme = parse_uri(uri).scheme
    if scheme == "kafka":
        from adaptd.connectors.kafka import sink_options, source_options

        (source_options if role == "source" else sink_options)(uri)
    elif role == "source":
        from adaptd.connectors.registry import open_source

        open_source(uri)
    else:
        from adaptd.connectors.registry import connector

        connector(scheme)


def check_settings_env(env: dict[str, str]) -> None:
    """``ADAPTD_*`` variables are known settings with valid values."""
    load_settings(environ={k: v for k, v in env.items() if k.startswith("ADAPTD_")})


# --- Dockerfile -------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_one(keyword: str) -> str:
    values = [rest for k, rest in dockerfile_instructions() if k == keyword]
    assert values, f"Dockerfile has no {keyword}"
    return values[-1]


def test_dockerfile_entrypoint_user_volume_port_and_healthcheck() -> None:
    assert json.loads(dockerfile_one("ENTRYPOINT")) == ["adaptd", "run"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "adaptd" in scripts
    user = dockerfile_one("USER").split(":")[0]
    assert user not in ("0", "root"), "the image must not run as root"
    env = dockerfile_env()
    check_settings_env(env)
    assert json.loads(dockerfile_one("VOLUME")) == [env["ADAPTD_STATE_DIR"]]
    assert dockerfile_one("EXPOSE") == env["ADAPTD_METRICS_PORT"]
    assert env["ADAPTD_METRICS_HOST"] == "0.0.0.0"
    health = dockerfile_one("HEALTHCHECK")
    assert "/healthz" in health and "ADAPTD_METRICS_PORT" in health


def test_dockerfile_installs_the_cpu_torch_pinned_here_and_copies_what_exists() -> None:
    args = dict(rest.split("=", 1) for k, rest in dockerfile_instructions()
                if k == "ARG" and "=" in rest)
    pin = re.search(r"^torch==(\S+)", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert pin and args["TORCH_VERSION"] == pin.group(1)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == ">=3.11" and tuple(map(int, args["PYTHON_VERSION"].split("."))) >= (3, 11)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    copied = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            copied.update(sources)
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert f"!{source}" in ignore or f"!{source}/**" in ignore, (
                    f"COPY {source}: excluded from the build context by Dockerfile.dockerignore")
    # Every package the distribution installs must be in the image.
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    # The folders the adaptd namespace is installed from (daemon/ is adaptd, connectors/ is
    # adaptd.connectors).
    packages = set(setuptools["package-dir"].values())
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"


# --- compose ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "producer", *REPLICAS, "prometheus", "grafana"}
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
        else:
            image = service["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), (
                f"{name}: external images must be pinned, got {image!r}")
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for volume in (v for s in services.values() for v in s.get("volumes", [])):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (DEPLOY / source).exists(), f"bind mount {source} does not exist"
        else:
            assert source in compose["volumes"], f"named volume {source} is not declared"


def test_compose_adaptd_and_producer_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka_env = services["kafka"]["environment"]
    kafka_address = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split("://", 1)[1]
    assert kafka_address == "kafka:9092"

    producer = services["producer"]
    assert producer["entrypoint"] == ["adaptd", "produce"]
    flags = check_command("produce", producer["command"])
    assert flags["--sink"].startswith(f"kafka://{kafka_address}/")  # type: ignore[union-attr]
    assert flags["--source"].startswith("synthetic:")  # type: ignore[union-attr]

    producer_sink = flag_values(producer["command"])["--sink"]
    assert producer_sink is not None
    topic = producer_sink.split("?")[0].rsplit("/", 1)[1]
    host_ports, state_volumes, sources = set(), set(), set()
    for name in REPLICAS:
        adaptd = services[name]
        assert "entrypoint" not in adaptd  # the image's `adaptd run`
        flags = check_command("run", adaptd["command"])
        source = str(flags["--source"])
        assert source.startswith(f"kafka://{kafka_address}/{topic}?group="), source
        sources.add(source)
        port = flags["--metrics-port"]
        assert port == dockerfile_env()["ADAPTD_METRICS_PORT"]
        assert flags["--metrics-host"] == "0.0.0.0"
        [mapping] = adaptd["ports"]
        assert mapping.endswith(f":{port}")
        host_ports.add(mapping.split(":")[0])
        state_dir = flags["--state-dir"]
        assert state_dir == dockerfile_env()["ADAPTD_STATE_DIR"]
        [volume] = [v for v in adaptd["volumes"] if v.split(":")[1] == state_dir]
        state_volumes.add(volume.split(":")[0])
        health = " ".join(adaptd["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/readyz" in health
    # One consumer group; each replica its own state volume (a cache: the changelog topic is
    # where partitions' states move between replicas) and its own host port.
    assert len(sources) == 1
    assert len(state_volumes) == len(host_ports) == len(REPLICAS)


def test_compose_prometheus_and_grafana_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    mounts = {v.split(":")[1]: DEPLOY / v.split(":")[0] for v in prometheus["volumes"]
              if v.startswith(".")}
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"]
                       if a.startswith("--config.file="))
    config = yaml.safe_load(mounts[config_path].read_text())
    [rule_glob] = config["rule_files"]
    rules_dir = Path(rule_glob).parent.as_posix()
    assert list(mounts[rules_dir].glob(Path(rule_glob).name)), "no rule file where Prometheus looks"
    [job] = config["scrape_configs"]
    targets = job["static_configs"][0]["targets"]
    ports = {name: flag_values(services[name]["command"])["--metrics-port"] for name in REPLICAS}
    assert targets == [f"{name}:{port}" for name, port in ports.items()]
    assert "9090:9090" in prometheus["ports"]

    grafana = services["grafana"]
    mounts = {v.split(":")[1]: DEPLOY / v.split(":")[0] for v in grafana["volumes"]
              if v.startswith(".")}
    provisioning = mounts["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    [provider] = yaml.safe_load(
        (provisioning / "dashboards" / "adaptd.yaml").read_text())["providers"]
    dashboards = mounts[provider["options"]["path"]]
    assert (dashboards / "adaptd.json").is_file()
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (mounts[home.parent.as_posix()] / home.name).is_file()
    json.loads((dashboards / "adaptd.json").read_text())


# --- Kubernetes ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) → object, for every resource the kustomization lists."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        path = KUBERNETES / resource
        assert path.is_file(), f"kustomization lists {resource}, which does not exist"
        for doc in yaml.safe_load_all(path.read_text()):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    listed = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == set(kustomization["resources"]), "a manifest is not in the kustomization"
    objects[("Kustomization", "")] = kustomization
    return objects


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` substitution in env values and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def pod_env(container: dict[str, Any], secret: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"], item
            assert ref["key"] in secret["stringData"], f"secret has no key {ref['key']!r}"
            env[item["name"]] = secret["stringData"][ref["key"]]
    return env


def test_kubernetes_statefulset(
    k8s: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sts = k8s[("StatefulSet", "adaptd")]
    pod = sts["spec"]["template"]
    [container] = pod["spec"]["containers"]
    secret = k8s[("Secret", "adaptd-kafka")]
    env = pod_env(container, secret)
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # sasl_plain_password_env must name a set variable
    args = [expand(a, env) for a in container["args"]]
    assert "$(" not in " ".join(args), args
    flags = check_command("run", args)
    assert "group=" in str(flags["--source"]), "replicas must share one consumer group"
    assert "sasl_plain_password=" not in " ".join(args), "the password belongs in the Secret"
    check_settings_env(env)

    # Settings file from the ConfigMap, where the args say it is.
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    config_file = Path(str(flags["--config"]))
    assert config_file.parent.as_posix() == config_mount["mountPath"]
    configmap = k8s[("ConfigMap", "adaptd-config")]
    [config_volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "config"]
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]
    toml_file = tmp_path / config_file.name
    toml_file.write_text(configmap["data"][config_file.name])
    settings = load_settings(toml_file, environ={})

    # Port, probes, state volume, identity, shutdown time.
    [port] = container["ports"]
    assert port["containerPort"] == settings.metrics_port and settings.metrics_host == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    # A volume per pod, from the claim template: a cache of the partitions' states, which move
    # between replicas through the changelog topic. Nothing is shared, so no ReadWriteMany.
    state_mount = next(m for m in container["volumeMounts"]
                       if m["mountPath"] == settings.state_dir)
    assert settings.state_dir == dockerfile_env()["ADAPTD_STATE_DIR"]
    assert state_mount["name"] not in {v["name"] for v in pod["spec"]["volumes"]}
    [claim] = [t for t in sts["spec"]["volumeClaimTemplates"]
               if t["metadata"]["name"] == state_mount["name"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not [k for k in k8s if k[0] == "PersistentVolumeClaim"], "no shared claim"
    assert sts["spec"]["replicas"] == 3
    assert settings.checkpoint.changelog and settings.checkpoint.meta_topic
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == dockerfile_one("USER").split(":")[0]
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 2 * settings.checkpoint_interval_s
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    image = k8s[("Kustomization", "")]["images"][0]
    assert container["image"] == image["name"]


def test_kubernetes_services_and_monitor_select_the_pods(
    k8s: dict[tuple[str, str], dict[str, Any]]
) -> None:
    sts = k8s[("StatefulSet", "adaptd")]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [container] = sts["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    headless = k8s[("Service", sts["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    for (kind, _), obj in k8s.items():
        if kind == "Service":
            assert obj["spec"]["selector"].items() <= labels.items()
            assert {p["targetPort"] for p in obj["spec"]["ports"]} <= port_names
    monitor = k8s[("PodMonitor", "adaptd")]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


# --- Grafana dashboard --------------------------------------------------------------------------

def test_dashboard_layout_and_datasources() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "adaptd.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    annotations = [a for a in dashboard["annotations"]["list"] if "expr" in a]
    assert any("adaptd_drift_events_total" in a["expr"] for a in annotations)
