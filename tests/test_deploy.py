"""deploy/: the Prometheus alert rules and the Grafana dashboard refer only to real series.

The rules pass ``promtool check rules`` (Debian's ``prometheus`` package), every alert has a
runbook note, and every ``mediaserver_*`` metric named in the rules or the dashboard exists in
the ``/metrics`` of a real server after a real call (enhancer, canary, DNSMOS and ASR on, so
every family is registered).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import METRICS_TOKEN, ServerProcess, client_summary, espeak_speech, server_metric, start_client, \
    stop_client, wait_participants
from model_variants import scaled_model
from requires import require_program

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mediaserver.json"
NAME = re.compile(r"\b(mediaserver_[a-z0-9_]+)")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")

pytestmark = pytest.mark.timeout(600)


def rule_exprs() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def metric_names(exprs) -> set[str]:
    return {m for e in exprs for m in NAME.findall(e)}


def test_alert_rules_pass_promtool() -> None:
    promtool = require_program("promtool", "apt-get install -y prometheus")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_runbook_and_room_independent_labels() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert len(alerts) >= 8
    for r in alerts:
        assert len(r["annotations"].get("runbook", "")) > 80, r["alert"]
        assert r["labels"]["severity"] in ("page", "ticket"), r["alert"]
        assert not re.search(r"\b(room|identity|participant)\b", r["expr"]), r["alert"]


def test_dashboard_is_current_with_its_generator(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboard", ROOT / "deploy" / "grafana" / "build_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    assert json.loads(DASHBOARD.read_text()) == module.dashboard()
    titles = {p["title"] for p in module.dashboard()["panels"]}
    assert {"Executive", "On-call", "Debug"} <= titles


def test_every_metric_in_rules_and_dashboard_exists_after_a_real_call(tmp_path: Path) -> None:
    used = metric_names(rule_exprs().values()) | metric_names(dashboard_exprs())
    assert len(used) >= 20
    root = tmp_path / "candidates"
    scaled_model(root, "quieter", 0.5)
    server = ServerProcess(tmp_path / "server.log", "--model-root", str(root), "--canary-model", "quieter",
                           "--canary-share", "0.5", "--dnsmos-sample-s", "9", "--asr", "wav",
                           "--record-dir", str(tmp_path / "asr"))
    try:
        speech = espeak_speech(tmp_path / "speech.wav", "Please call Stella and ask her to bring these things "
                               "with her from the store.", seconds=16.0)
        b = start_client(server.url, "deploy", "B", "--duration", "200", log=tmp_path / "B.log")
        wait_participants(server, 1)
        a = start_client(server.url, "deploy", "A", "--send", str(speech), log=tmp_path / "A.log")
        client_summary(a)
        deadline = time.monotonic() + 180
        while server_metric(server, "mediaserver_enhancer_dnsmos_samples_total") < 1:
            assert time.monotonic() < deadline, "no DNSMOS sample scored"
            time.sleep(0.5)
        stop_client(b)
        request = urllib.request.Request(server.url + "metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            families = list(text_string_to_metric_families(resp.read().decode()))
    finally:
        server.stop()
    live = {f.name for f in families} | {s.name for f in families for s in f.samples}
    missing = sorted(m for m in used if m not in live and not any(
        m.endswith(sfx) and m[: -len(sfx)] in live for sfx in SUFFIXES))
    assert not missing, f"referenced but not in /metrics: {missing}"
    # every enhancer family carries model_version (and the DNSMOS one got real samples)
    for f in families:
        if f.name.startswith("mediaserver_enhancer_"):
            assert all("model_version" in s.labels for s in f.samples), f.name
    assert any(s.name == "mediaserver_enhancer_dnsmos_count" and s.value >= 1 for f in families for s in f.samples)


def test_compose_nodes_use_only_real_settings_and_differ_where_they_must() -> None:
    """docker-compose.yml's server nodes: every MEDIASERVER_* variable is the twin of a real
    ``mediaserver serve`` flag (a typo would be ignored silently), and the nodes share Redis
    and the secret but not the port, the node id or the advertised URL."""
    from mediaserver.cli import build_parser
    from mediaserver.config import env_name

    parser = build_parser("serve")
    serve = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {env_name(f) for a in serve.choices["serve"]._actions for f in a.option_strings
             if f.startswith("--")}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    nodes = {name: svc["environment"] for name, svc in compose["services"].items()
             if svc.get("image", "").startswith("mediaserver")}
    assert len(nodes) == 2, sorted(nodes)
    for name, env in nodes.items():
        unknown = sorted(k for k in env if k.startswith("MEDIASERVER_") and k not in flags)
        assert not unknown, (name, unknown)
        assert env["MEDIASERVER_REDIS_URL"].startswith("redis://"), env
    first, second = nodes.values()
    for shared in ("MEDIASERVER_REDIS_URL", "MEDIASERVER_SECRET", "MEDIASERVER_TURN_SECRET"):
        assert first[shared] == second[shared], shared
    for own in ("MEDIASERVER_PORT", "MEDIASERVER_NODE_ID", "MEDIASERVER_ADVERTISE_URL"):
        assert first[own] != second[own], own
    targets = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    scraped = {t for job in targets["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert {f"127.0.0.1:{env['MEDIASERVER_PORT']}" for env in nodes.values()} <= scraped, scraped
