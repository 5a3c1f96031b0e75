"""The Grafana dashboard queries only metrics the proxy exports: every metric name in its
PromQL is checked against a live proxy's /metrics after a few calls."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.server import RunningProxy

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/autellix.json"
CHAT = {"model": "sim-llama-3.1-8b", "messages": [{"role": "user", "content": "Hi"}]}

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                 "or", "unless", "offset"}  # fmt: skip


def panel_exprs(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.setdefault(panel["title"], []).append(target["expr"])
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    keywords, label names (in {} or by/without lists) or range selectors."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    names = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
    return {n for n in names if n not in _PROMQL_WORDS}


def exported(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


def test_metric_name_extraction() -> None:
    expr = 'histogram_quantile(0.9, sum by (le, route) (rate(a_b_bucket{x="y"}[5m]))) / c'
    assert metric_names(expr) == {"a_b_bucket", "c"}


async def test_every_dashboard_metric_is_exported(
    proxy: RunningProxy, http: aiohttp.ClientSession
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = panel_exprs(dashboard)
    # The panels are all there.
    for title in ("Program latency", "Calls waiting per level", "Admissions, preemptions, resumes",
                  "Engine load", "Engine health", "Tokens/s", "Process-table size"):  # fmt: skip
        assert title in exprs, title
    async with http.post(proxy.url + "/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 200
    async with http.post(proxy.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
        await resp.read()
    async with http.get(proxy.url + "/metrics") as resp:
        have = exported(await resp.text())
    used = {name for group in exprs.values() for expr in group for name in metric_names(expr)}
    assert used, "no metric found in the dashboard"
    missing = sorted(used - have)
    assert not missing, f"the dashboard queries metrics the proxy does not export: {missing}"
