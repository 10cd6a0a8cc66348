"""The Prometheus rules with the real tools: promtool checks and unit-tests them, and a real
Prometheus on loopback scrapes a running adaptd, evaluates the rules and answers queries."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from adaptd.learner.ensemble import task_experts
from tests.deploy.conftest import DEPLOY, RULES_DIR, RunningDaemon, require_tool
from tests.helpers import free_port, http_get, wait_for

RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool", "prometheus"), *args], check=False, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_rule_files_exist() -> None:
    assert RULE_FILES, f"no rule files in {RULES_DIR}"
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts() -> None:
    for test_file in RULE_TESTS:
        result = promtool("test", "rules", test_file.name, cwd=test_file.parent)
        assert result.returncode == 0, result.stdout + result.stderr


def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    # The compose config names container paths; check it with the rules where it expects them.
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/*.yml" in config
    local = tmp_path / "prometheus.yml"
    local.write_text(config.replace("/etc/prometheus/rules/", f"{RULES_DIR}/"))
    result = promtool("check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


class PrometheusServer:
    def __init__(self, url: str, log_path: Path) -> None:
        self.url = url
        self.log_path = log_path

    def api(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"{self.url}/api/v1/{path}{query}")
        assert status == 200, f"{path} answered {status}: {body[:500]!r}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]


@pytest.fixture(scope="module")
def prometheus(
    running_daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping the running daemon every second, with the project's rules."""
    binary = require_tool("prometheus", "prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "rule_files:\n"
        f"  - {RULES_DIR}/*.yml\n"
        "scrape_configs:\n"
        "  - job_name: adaptd\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{running_daemon.port}']\n"
    )
    log_path = work / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", log_path)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{log_path.read_text()[-3000:]}")
            return http_get(f"{server.url}/-/ready", timeout_s=1)[0] == 200

        wait_for(ready, timeout_s=60, what="prometheus /-/ready")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_prometheus_scrapes_the_daemon(
    prometheus: PrometheusServer, running_daemon: RunningDaemon
) -> None:
    def answered() -> bool:
        return bool(prometheus.query("adaptd_records_consumed_total"))

    wait_for(answered, timeout_s=60, what="a non-empty answer for adaptd_records_consumed_total")
    [sample] = prometheus.query("adaptd_records_consumed_total")
    assert sample["metric"]["job"] == "adaptd"
    assert float(sample["value"][1]) == running_daemon.records_sent
    targets = prometheus.api("targets")["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]


def test_prometheus_has_each_candidate_s_weight(
    prometheus: PrometheusServer, running_daemon: RunningDaemon
) -> None:
    """--model auto (the daemon's default): adaptd_candidate_weight{candidate} per expert,
    the Hedge weights averaged over live keys, so together they are one."""
    experts = task_experts("regression")  # the driving stream's task: no tree
    wait_for(lambda: len(prometheus.query("adaptd_candidate_weight")) == len(experts),
             timeout_s=60, what="adaptd_candidate_weight for every candidate")
    weights = {s["metric"]["candidate"]: float(s["value"][1])
               for s in prometheus.query("adaptd_candidate_weight")}
    assert set(weights) == set(experts) == {"linear", "mlp", "knn", "prior", "last"}
    assert all(0 <= w <= 1 for w in weights.values()), weights
    assert abs(sum(weights.values()) - 1) < 1e-6, weights
    [total] = prometheus.query("sum(adaptd_candidate_weight)")
    assert abs(float(total["value"][1]) - 1) < 1e-6


def test_prometheus_loads_and_evaluates_the_rules(prometheus: PrometheusServer) -> None:
    def evaluated() -> bool:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return bool(rules) and all(r["health"] != "unknown" for r in rules) and bool(
            prometheus.query("instance:adaptd_records_consumed:rate1m"))

    wait_for(evaluated, timeout_s=60,
             what="every rule evaluated and instance:adaptd_records_consumed:rate1m recorded")
    groups = prometheus.api("rules")["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"AdaptdNoRecordsConsumed", "AdaptdCheckpointsFailing",
            "job:adaptd_records_consumed:rate1m"} <= names
    bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
           if r["health"] != "ok"]
    assert not bad, bad
