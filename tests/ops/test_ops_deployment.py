"""Deploying the operations side: the monitoring profile (Prometheus config, alert rules,
Grafana provisioning and dashboard) agrees with docker-compose.yml, with what /metrics
exposes and with the runbook; the page's files ship in the distribution."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fakeredis
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.metrics import registry_for
from dispatcher.telemetry import Telemetry
from tests.test_deployment import HOST_CREDENTIALS, load_compose, run_compose

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "prometheus"
DASHBOARD = PROM / "grafana" / "dashboards" / "dispatcher.json"
RUNBOOK = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\b(dispatcher_[a-z_]+)\b")


class _WithInfo(fakeredis.FakeRedis):
    def info(self, section: str | None = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"used_memory": 1024, "maxmemory": 4096}  # fakeredis has no INFO memory


def exposed_names() -> set[str]:
    """Every sample name /metrics serves (with _total, _bucket, _count, _sum)."""
    client = _WithInfo()
    Telemetry(client).observe_latency(0.1, "delivered")
    text = generate_latest(registry_for(client)).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def anchors() -> set[str]:
    headings = re.findall(r"^#{2,3} (.+)$", RUNBOOK.read_text(), flags=re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-") for h in headings}


def test_every_metric_named_in_alerts_and_dashboard_is_exposed() -> None:
    names = exposed_names()
    used = {m for expr in [r["expr"] for r in rules()] + dashboard_exprs()
            for m in METRIC.findall(expr)}
    assert used, "no metric referenced at all"
    assert used <= names, f"not exposed by /metrics: {sorted(used - names)}"


def test_alerts_cover_oldest_age_and_dead_letters_and_link_the_runbook() -> None:
    all_rules = rules()
    exprs = " ".join(r["expr"] for r in all_rules)
    for needed in ("dispatcher_oldest_call_age_seconds", "dispatcher_dead_letters",
                   "dispatcher_calls_dead_lettered_total", "dispatcher_workers_alive",
                   'dispatcher_circuit_state{state="open"}', 'up{job="dispatcher"}'):
        assert needed in exprs, needed
    known = anchors()
    for rule in all_rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor in known, (rule["alert"], anchor)


def test_dashboard_shows_what_the_issue_asks_and_uses_the_provisioned_source() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = " ".join(dashboard_exprs())
    for needed in ("dispatcher_queued_calls", "dispatcher_oldest_call_age_seconds",
                   "rate(dispatcher_calls_delivered_total", "dispatcher_dead_letters",
                   "dispatcher_circuit_state", "dispatcher_cad_request_duration_seconds_bucket"):
        assert needed in exprs, needed
    source = yaml.safe_load((PROM / "grafana/provisioning/datasources/prometheus.yml"
                             ).read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_compose_profile_mounts_these_files_and_stays_optional() -> None:
    services = load_compose()["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    for service in (prometheus, grafana):
        assert service["profiles"] == ["monitoring"]
        assert all(p.startswith("127.0.0.1:") for p in service["ports"]), "loopback only"
        for volume in service["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    mounts = {v.split(":")[1] for v in prometheus["volumes"]}
    assert set(config["rule_files"]) <= mounts
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == [
        "web:8000"]
    provider = yaml.safe_load((PROM / "grafana/provisioning/dashboards/dispatcher.yml"
                               ).read_text())["providers"][0]
    assert any(v.endswith(":" + provider["options"]["path"] + ":ro")
               for v in grafana["volumes"])

    plain = run_compose(HOST_CREDENTIALS, "config", "--services")
    assert plain.returncode == 0, plain.stderr
    assert "prometheus" not in plain.stdout.split() and "web" in plain.stdout.split()
    full = run_compose(HOST_CREDENTIALS, "--profile", "monitoring", "config", "--services")
    assert full.returncode == 0, full.stderr
    assert {"prometheus", "grafana"} <= set(full.stdout.split())


def test_the_page_files_are_package_data() -> None:
    """A plain `pip install .` (the Docker image) must ship the templates and the CSS."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    from fnmatch import fnmatch

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["dispatcher.http"]
    package = ROOT / "dispatcher" / "http"
    files = [p.relative_to(package).as_posix() for folder in ("templates", "static")
             for p in (package / folder).rglob("*") if p.is_file()]
    assert any(f.endswith(".html") for f in files) and "static/ops.css" in files
    missing = [f for f in files if not any(fnmatch(f, g) for g in globs)]
    assert not missing, f"add to [tool.setuptools.package-data] \"dispatcher.http\": {missing}"
