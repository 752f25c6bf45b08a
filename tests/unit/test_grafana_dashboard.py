"""deploy/grafana/telemetry.json: valid JSON, every panel with a datasource and targets, every
Prometheus metric it queries exported by the collector (names read from a collector's own
registry, not from a list here), every SQL query on the postgres sink's table and columns."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from telemetry.collector import Collector
from telemetry.config import CollectorConfig
from telemetry.sinks._common import COLUMNS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "telemetry.json"
SQL_WORDS = {
    "select", "distinct", "on", "from", "where", "and", "in", "order", "by", "desc", "as",
    "group", "avg", "time", "metric", "readings",
}  # fmt: skip


def exported_metric_names() -> set[str]:
    """The series names a collector's /metrics carries, from its registry's families."""
    collector = Collector(CollectorConfig(sinks=[{"type": "null"}]))  # type: ignore[list-item]
    names = set()
    for family in collector.metrics.registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",),
        }[family.type]
        names.update(family.name + suffix for suffix in suffixes)
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_every_panel_has_a_datasource_and_targets() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert len(panels()) >= 7
    for panel in panels():
        assert panel["datasource"]["uid"].strip("${}") in variables, panel["title"]
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["refId"]
            assert target.get("expr") or target.get("rawSql"), panel["title"]
        uid = panel["datasource"]["uid"].strip("${}")
        assert variables[uid]["type"] == "datasource"
        assert variables[uid]["query"] == panel["datasource"]["type"]


def test_every_prometheus_metric_is_one_the_collector_exports() -> None:
    exported = exported_metric_names()
    assert "telemetry_readings_total" in exported  # a labeled counter, before any sample
    queried = set()
    exprs = [t["expr"] for p in panels() for t in p["targets"] if "expr" in t]
    for variable in dashboard()["templating"]["list"]:
        if variable.get("datasource", {}).get("type") == "prometheus":
            exprs.append(variable["definition"])
    for expr in exprs:
        queried.update(re.findall(r"\btelemetry_[a-z_]+\b", expr))
    assert queried - exported == set()
    # Readings by outcome, acks/nacks, write latency, queue depth, connections: all there.
    for name in (
        "telemetry_readings_total",
        "telemetry_acks_total",
        "telemetry_nacks_total",
        "telemetry_sink_write_seconds_bucket",
        "telemetry_sink_queue_readings",
        "telemetry_open_connections",
    ):
        assert name in queried, name


def test_every_sql_query_reads_the_postgres_sink_s_columns() -> None:
    queries = [t["rawSql"] for p in panels() for t in p["targets"] if "rawSql" in t]
    for variable in dashboard()["templating"]["list"]:
        if variable.get("datasource", {}).get("type") == "grafana-postgresql-datasource":
            queries.append(variable["query"])
    assert len(queries) >= 3
    for sql in queries:
        assert re.search(r"\bFROM readings\b", sql), sql
        words = re.sub(r"\$\w+(\([^)]*\))?|'[^']*'|\"time\"|\d+", " ", sql).lower()
        unknown = set(re.findall(r"[a-z_]+", words)) - SQL_WORDS - set(COLUMNS)
        assert unknown == set(), (unknown, sql)
