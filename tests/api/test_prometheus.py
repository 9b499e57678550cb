"""A real Prometheus scrapes a running ``voxgate serve``; the deploy/ files are checked by promtool and
against what voxgate exports.

Prometheus and promtool are the Debian package ``prometheus``; ``scripts/monitoring-tools.sh`` installs it
when missing. The Prometheus here runs on a free loopback port with a generated config and is stopped after
the module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from voxgate.service import metrics
from voxgate.service.runtime import Runtime
from voxgate.settings import Settings

PASSWORD = "prometheus-scrape-password"  # the live_server fixture's admin password
REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "monitoring-tools.sh"
DASHBOARD = REPO / "deploy" / "grafana" / "voxgate.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERT_TESTS = Path(__file__).resolve().parent / "alerts_test.yml"
FOREIGN = {"up"}  # series Prometheus makes itself


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_tools() -> None:
    """Install prometheus and promtool with the project's script when they are missing (CI runs as root)."""
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        subprocess.run(["bash", str(INSTALL)], check=True, timeout=900)


@pytest.fixture(scope="module")
def promtool() -> str:
    ensure_tools()
    found = shutil.which("promtool")
    assert found is not None, "scripts/monitoring-tools.sh did not install promtool"
    return found


@pytest.fixture(scope="module")
def server_env() -> Iterator[int]:
    """The settings this module's ``live_server`` starts with (it passes the environment on): a metrics
    listener on a free loopback port, and streams that do not time out while the test waits for scrapes."""
    port = _free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VOXGATE_METRICS_PORT", str(port))
        env.setenv("VOXGATE_STREAM_IDLE_TIMEOUT_S", "120")
        yield port


@dataclass(frozen=True)
class Server:
    api: str  # base URL of the API
    metrics_port: int


@pytest.fixture(scope="module")
def server(server_env: int, live_server: str) -> Server:
    """The live server, started with ``server_env`` (always through here: the environment comes first)."""
    return Server(live_server, server_env)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, server: Server) -> Iterator[str]:
    """A real Prometheus scraping the live server's metrics listener every second; its base URL."""
    ensure_tools()
    binary = shutil.which("prometheus")
    assert binary is not None, "scripts/monitoring-tools.sh did not install prometheus"
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: voxgate\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.metrics_port}']\n"
    )
    port = _free_port()
    log_path = work / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (promql, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(prometheus: str, promql: str, expected: float, timeout_s: float = 30) -> None:
    """Until the instant query's single value equals ``expected`` (scrapes come every second)."""
    deadline = time.monotonic() + timeout_s
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = query(prometheus, promql)
        if len(seen) == 1 and float(seen[0]["value"][1]) == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{promql} never became {expected}: {seen}")


def _login(base: str) -> dict[str, str]:
    response = httpx.post(
        f"{base}/rest-auth/login/", json={"username": "admin", "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Token {response.json()['key']}"}


def test_prometheus_counts_a_live_stream(prometheus: str, server: Server) -> None:
    target = f"127.0.0.1:{server.metrics_port}"
    wait_for(prometheus, f'up{{job="voxgate", instance="{target}"}}', 1)
    wait_for(prometheus, 'sum(voxgate_streams{job="voxgate"})', 0)

    auth = _login(server.api)
    response = httpx.post(
        f"{server.api}/api/v2/stream/HTTP", json={"frequency": 8000}, headers=auth, timeout=30
    )
    assert response.status_code == 201, response.text
    stream = response.json()["uuid"]
    wait_for(prometheus, 'sum(voxgate_streams{job="voxgate"})', 1)
    wait_for(prometheus, 'sum(voxgate_streams{job="voxgate", type="HTTP", state="collecting"})', 1)
    wait_for(prometheus, 'sum(voxgate_http_requests_total{route="/api/v2/stream/HTTP", status="201"})', 1)

    response = httpx.delete(f"{server.api}/api/v2/stream/HTTP/{stream}", headers=auth, timeout=30)
    assert response.status_code == 200, response.text
    wait_for(prometheus, 'sum(voxgate_streams{job="voxgate"})', 0)


def test_the_api_port_has_no_metrics(server: Server) -> None:
    assert httpx.get(f"{server.api}/metrics", timeout=10).status_code == 404
    response = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10)
    assert response.status_code == 200 and "voxgate_build_info" in response.text
    assert httpx.get(f"http://127.0.0.1:{server.metrics_port}/api/v2/status", timeout=10).status_code == 404


# -- deploy/ ----------------------------------------------------------------------------------------------


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


def alert_queries() -> list[str]:
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())
    return [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def exported_series(tmp_path: Path) -> set[str]:
    """Every series name voxgate's /metrics can carry (counters with _total, histograms' three)."""
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "summary": ["_sum", "_count"],
    }
    families = [
        *metrics.REGISTRY.collect(),
        *metrics.RuntimeCollector(Runtime(Settings(data_dir=tmp_path))).describe(),
    ]
    names: set[str] = set()
    for family in families:
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def series_in(promql: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', promql)
    return {
        name
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings)
        if name.startswith(("voxgate_", "process_", "python_")) or name in FOREIGN
    }


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_query_names_metrics_voxgate_exports(source: str, tmp_path: Path) -> None:
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    assert len(queries) >= 10
    exported = exported_series(tmp_path)
    for promql in queries:
        named = series_in(promql)
        assert named - FOREIGN or "up" in named, f"no voxgate series in {promql}"
        assert named - FOREIGN <= exported, (
            f"{sorted(named - FOREIGN - exported)} are not exported ({promql})"
        )


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    text = DASHBOARD.read_text()
    for needed in (
        "voxgate_streams",
        "histogram_quantile(0.5, sum by (le) (rate(voxgate_verify_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(voxgate_verify_latency_seconds_bucket",
        "voxgate_verifications_total",
        "voxgate_engine_backlog_seconds",
        "voxgate_engine_cycle_seconds_sum",
        'status=~\\"5..\\"',
        "voxgate_webhook_deliveries_total",
        "voxgate_sip_registrations",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert needed in text, needed


def test_dashboard_queries_run_on_prometheus(prometheus: str) -> None:
    """Each panel's PromQL parses and runs (Grafana's variables replaced as Grafana would)."""
    for promql in dashboard_queries():
        query(prometheus, promql.replace("$__rate_interval", "1m").replace("$instance", ".*"))


def test_alert_rules_and_scrape_config_pass_promtool(promtool: str) -> None:
    for command in (
        [promtool, "check", "rules", str(ALERTS)],
        [promtool, "check", "config", str(SCRAPE_CONFIG)],
        [promtool, "test", "rules", str(ALERT_TESTS)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ})
        assert done.returncode == 0, done.stdout + done.stderr
