"""SDK → live collector (OTLP/HTTP) → embedded ClickHouse → query API, with two projects kept apart."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from conftest import LiveCollector

from veil_collector.auth import create_project


def _wait_for_spans(client: httpx.Client, headers: dict[str, str], spans: int) -> dict[str, Any]:
    """Poll the project's stats until ``spans`` spans are queryable (the spool drains asynchronously)."""
    deadline = time.monotonic() + 60
    while True:
        stats = client.get("/api/stats", headers=headers).json()
        if stats["spans"] >= spans or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sent(collector: LiveCollector) -> dict[str, Any]:
    """Two projects, each with one application run; their keys' headers and the apps' reports."""
    _, key_a = create_project(collector.store, "project-a")
    _, key_b = create_project(collector.store, "project-b")
    report_a = collector.run_app(key_a, "a")
    report_b = collector.run_app(key_b, "b")
    headers_a = {"Authorization": f"Bearer {key_a}"}
    headers_b = {"Authorization": f"Bearer {key_b}"}
    with httpx.Client(base_url=collector.base_url, timeout=10) as client:
        _wait_for_spans(client, headers_a, report_a["stats"]["exported"])
        _wait_for_spans(client, headers_b, report_b["stats"]["exported"])
    return {"a": (headers_a, report_a), "b": (headers_b, report_b)}


def test_the_sdk_delivered_every_span(sent: dict[str, Any]) -> None:
    for _, report in sent.values():
        assert report["stats"]["exported"] == 5  # agent, tool, chat; chain, chat
        assert report["stats"]["failed"] == report["stats"]["dropped"] == 0


def test_traces_are_listed_with_their_summary(collector: LiveCollector, sent: dict[str, Any]) -> None:
    headers, report = sent["a"]
    body = httpx.get(f"{collector.base_url}/api/traces", headers=headers, timeout=10).json()
    by_id = {t["trace_id"]: t for t in body["traces"]}
    assert set(by_id) == {report["agent"], report["failing"]}
    agent = by_id[report["agent"]]
    assert agent["root_span_name"] == "invoke_agent helper"
    assert agent["service_name"] == "e2e-a"
    assert (agent["span_count"], agent["status"]) == (3, "ok")
    assert agent["models"] == ["gpt-4o-mini"]
    assert (agent["user_id"], agent["session_id"]) == ("user-a", "session-a")
    assert (agent["input_tokens"], agent["output_tokens"]) == (1000, 500)
    # gpt-4o-mini: $0.15 in / $0.60 out per million tokens.
    assert agent["cost_usd"] == pytest.approx(0.00015 + 0.0003)
    assert by_id[report["failing"]]["status"] == "error"

    only_errors = httpx.get(
        f"{collector.base_url}/api/traces", params={"status": "error"}, headers=headers, timeout=10
    ).json()
    assert [t["trace_id"] for t in only_errors["traces"]] == [report["failing"]]


def test_the_span_tree_comes_back_scrubbed(collector: LiveCollector, sent: dict[str, Any]) -> None:
    headers, report = sent["a"]
    response = httpx.get(f"{collector.base_url}/api/traces/{report['agent']}", headers=headers, timeout=10)
    assert response.status_code == 200
    tree = response.json()
    assert tree["span_count"] == 3
    [root] = tree["spans"]
    assert root["name"] == "invoke_agent helper"
    assert sorted(child["name"] for child in root["children"]) == ["chat gpt-4o-mini", "execute_tool lookup"]
    chat = next(child for child in root["children"] if child["name"].startswith("chat"))
    assert chat["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] == "1000"
    assert chat["cost_usd"] == pytest.approx(0.00045)
    assert chat["resource_attributes"]["service.name"] == "e2e-a"
    # The SDK scrubbed the address before export: it never reached the collector.
    assert "alice.smith@example.com" not in json.dumps(tree)
    assert "EMAIL" in chat["attributes"]["gen_ai.input.messages"]


def test_stats_cover_the_project(collector: LiveCollector, sent: dict[str, Any]) -> None:
    headers, report = sent["a"]
    stats = httpx.get(f"{collector.base_url}/api/stats", headers=headers, timeout=10).json()
    assert (stats["traces"], stats["spans"]) == (2, report["stats"]["exported"])
    assert (stats["llm_calls"], stats["llm_errors"]) == (2, 1)
    [model] = stats["by_model"]
    assert (model["model"], model["provider"], model["calls"]) == ("gpt-4o-mini", "openai", 2)
    assert stats["latency_ms"]["p50"] is not None
    assert stats["pii_findings_total"] >= 1


def test_a_project_cannot_read_another_projects(collector: LiveCollector, sent: dict[str, Any]) -> None:
    headers_a, report_a = sent["a"]
    headers_b, report_b = sent["b"]
    for headers, own, other in ((headers_a, report_a, report_b), (headers_b, report_b, report_a)):
        listed = httpx.get(f"{collector.base_url}/api/traces", headers=headers, timeout=10).json()
        assert {t["trace_id"] for t in listed["traces"]} == {own["agent"], own["failing"]}
        for trace_id in (other["agent"], other["failing"]):
            response = httpx.get(f"{collector.base_url}/api/traces/{trace_id}", headers=headers, timeout=10)
            assert response.status_code == 404
        assert httpx.get(f"{collector.base_url}/api/stats", headers=headers, timeout=10).json()["traces"] == 2
    unauthenticated = httpx.get(f"{collector.base_url}/api/traces/{report_a['agent']}", timeout=10)
    assert unauthenticated.status_code == 401
