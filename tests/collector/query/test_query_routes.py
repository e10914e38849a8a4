"""The query API over HTTP, on the real app and a real embedded ClickHouse: auth, project scope, errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from query_rows import CALL_COLUMNS, SPAN_COLUMNS, T0, call_row, minutes, span_id, span_row, trace_id

from veil_collector.app import create_app
from veil_collector.auth import create_project
from veil_collector.config import Settings

DAY = timedelta(days=1)
WINDOW = {"start": (T0 - minutes(60)).isoformat(), "end": (T0 + minutes(60)).isoformat()}


@pytest.fixture(scope="module")
def api(
    chdb_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """A client of the app with auth on, and the headers of two projects' keys (A owns traces 1-3, B 9).

    Shared by the module's tests, which only read.
    """
    settings = Settings(
        clickhouse_dsn=chdb_dsn,
        database=f"test_{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path_factory.mktemp("collector"),
        pii_ner_enabled=False,
    )
    with TestClient(create_app(settings)) as client:
        store = client.app.state.store
        pa, key_a = create_project(store, "a")
        pb, key_b = create_project(store, "b")
        spans = [
            span_row(trace=trace_id(n), span=span_id(n), name=f"root {n}", at=T0 + minutes(n), project=pa)
            for n in (1, 2, 3)
        ]
        spans.append(
            span_row(
                trace=trace_id(4), span=span_id(4), parent=span_id(1), name="chat gpt-4o", at=T0 + minutes(1),
                attributes={"gen_ai.request.model": "gpt-4o", "user.id": "u-1", "session.id": "s-1"},
                status="Error", duration_ms=250.0, service="llm-gateway", project=pa,
            )
        )  # fmt: skip
        spans.append(span_row(trace=trace_id(9), span=span_id(9), name="b's secret", project=pb))
        store.insert("otel_traces", spans, SPAN_COLUMNS)
        store.insert(
            "llm_calls",
            [
                call_row(
                    trace=trace_id(1),
                    span=span_id(1),
                    model="gpt-4o-mini",
                    at=T0 + minutes(1),
                    project=pa,
                    cost=0.5,
                ),
                call_row(
                    trace=trace_id(4),
                    span=span_id(4),
                    model="gpt-4o",
                    at=T0 + minutes(1),
                    project=pa,
                    cost=None,
                    status="Error",
                ),
            ],
            CALL_COLUMNS,
        )
        try:
            yield client, {"Authorization": f"Bearer {key_a}"}, {"Authorization": f"Bearer {key_b}"}
        finally:
            store.command(f"DROP DATABASE IF EXISTS `{settings.database}`")


def test_every_route_needs_a_key(api: tuple[TestClient, dict, dict]) -> None:
    client, _, _ = api
    for path in ("/api/traces", f"/api/traces/{trace_id(1)}", "/api/stats"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/api/traces", headers={"Authorization": "Bearer veil_wrong"}).status_code == 401


def test_a_project_reads_only_its_own_traces(api: tuple[TestClient, dict, dict]) -> None:
    client, a, b = api
    listed = client.get("/api/traces", params=WINDOW, headers=a).json()
    assert [t["trace_id"] for t in listed["traces"]] == [trace_id(3), trace_id(2), trace_id(4), trace_id(1)]
    assert client.get("/api/traces", params=WINDOW, headers=b).json()["traces"][0]["trace_id"] == trace_id(9)

    assert client.get(f"/api/traces/{trace_id(9)}", headers=a).status_code == 404
    assert client.get(f"/api/traces/{trace_id(1)}", headers=b).status_code == 404
    detail = client.get(f"/api/traces/{trace_id(9)}", headers=b)
    assert detail.status_code == 200
    assert detail.json()["spans"][0]["name"] == "b's secret"

    stats_a = client.get("/api/stats", params=WINDOW, headers=a).json()
    stats_b = client.get("/api/stats", params=WINDOW, headers=b).json()
    assert (stats_a["traces"], stats_a["llm_calls"], stats_a["cost_usd"]) == (4, 2, 0.5)
    assert (stats_b["traces"], stats_b["llm_calls"], stats_b["cost_usd"]) == (1, 0, None)


def test_trace_detail_serves_the_tree(api: tuple[TestClient, dict, dict]) -> None:
    client, a, _ = api
    body = client.get(f"/api/traces/{trace_id(1).upper()}", headers=a).json()
    assert body["trace_id"] == trace_id(1)
    [root] = body["spans"]
    assert root["span_id"] == span_id(1)
    assert root["cost_usd"] == 0.5
    assert root["evaluations"] == [] and root["children"] == []
    assert root["resource_attributes"] == {"service.name": "svc"}


def test_paging_through_the_api(api: tuple[TestClient, dict, dict]) -> None:
    client, a, _ = api
    first = client.get("/api/traces", params={**WINDOW, "limit": 3}, headers=a).json()
    assert [t["trace_id"] for t in first["traces"]] == [trace_id(3), trace_id(2), trace_id(4)]
    second = client.get(
        "/api/traces", params={**WINDOW, "limit": 2, "cursor": first["next_cursor"]}, headers=a
    )
    assert [t["trace_id"] for t in second.json()["traces"]] == [trace_id(1)]
    assert second.json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("path", "params", "status", "fragment"),
    [
        ("/api/traces", {"cursor": "garbage"}, 400, "cursor"),
        (
            "/api/traces",
            {"start": T0.isoformat(), "end": (T0 - timedelta(1)).isoformat()},
            400,
            "after start",
        ),
        ("/api/stats", {"start": T0.isoformat(), "end": T0.isoformat()}, 400, "after start"),
        ("/api/traces", {"status": "broken"}, 422, "status"),
        ("/api/traces", {"limit": 0}, 422, "limit"),
        ("/api/traces", {"min_duration_ms": -5}, 422, "min_duration_ms"),
        ("/api/traces", {"start": "yesterday"}, 422, "start"),
        ("/api/traces/not-a-trace-id", {}, 422, "trace_id"),
        (f"/api/traces/{trace_id(404)}", {}, 404, "not found"),
    ],
)
def test_bad_requests_get_a_clear_status(
    api: tuple[TestClient, dict, dict], path: str, params: dict, status: int, fragment: str
) -> None:
    client, a, _ = api
    response = client.get(path, params=params, headers=a)
    assert response.status_code == status
    assert fragment in response.text


def test_filters_reach_the_query(api: tuple[TestClient, dict, dict]) -> None:
    client, a, _ = api

    def ids(**filters: object) -> list[str]:
        body = client.get("/api/traces", params={**WINDOW, **filters}, headers=a).json()
        return [t["trace_id"] for t in body["traces"]]

    # Trace 4 is a single chat span (its parent never arrived) that failed after 250 ms.
    for filters in (
        {"model": "gpt-4o"},
        {"user_id": "u-1"},
        {"session_id": "s-1"},
        {"status": "error"},
        {"service": "llm-gateway"},
        {"min_duration_ms": 100},
    ):
        assert ids(**filters) == [trace_id(4)], filters
    assert ids(status="ok") == [trace_id(3), trace_id(2), trace_id(1)]
    assert ids(model="gpt-4o", status="ok") == []


def test_openapi_documents_the_query_routes(api: tuple[TestClient, dict, dict]) -> None:
    client, _, _ = api
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/traces", "/api/traces/{trace_id}", "/api/stats"} <= set(paths)
    params = {p["name"] for p in paths["/api/traces"]["get"]["parameters"]}
    assert {"start", "end", "service", "model", "user_id", "session_id", "status", "min_duration_ms", "limit",
            "cursor"} <= params  # fmt: skip
