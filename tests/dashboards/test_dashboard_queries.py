"""Every dashboard query, expanded exactly as Grafana and the ClickHouse plugin expand it, runs on
embedded ClickHouse seeded with a realistic workload and returns what its panel needs.

Each panel target and each variable query is run under three selections (everything "All"; one
service, model and environment; several values), and key panels are checked against the seeded truth.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from dashboard_seed import (
    ENVIRONMENTS,
    MODELS,
    OTHER_PROJECT,
    PROJECT,
    SERVICES,
    TOXIC_RESPONSE,
    Workload,
    seed_workload,
)
from grafana_expand import ALL, TimeRange, Variable, expand

from veil_collector.store import Store
from veil_collector.store.migrate import migrate

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards" / "json"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
TRACE_VIEW_COLUMNS = [
    "traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime", "duration", "tags",
    "serviceTags",
]  # fmt: skip


def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(name, panel) for name, board in _dashboards().items() for panel in board["panels"]]


@pytest.fixture(scope="module")
def seeded(chdb_dsn: str) -> Iterator[tuple[Store, Workload]]:
    """One migrated database with the workload, shared by this module's read-only tests."""
    store = Store(chdb_dsn, database=f"test_dash_{uuid.uuid4().hex[:12]}")
    migrate(store)
    workload = seed_workload(store, now=NOW)
    yield store, workload
    store.command(f"DROP DATABASE IF EXISTS `{store.database}`")
    store.close()


def _time_range(workload: Workload) -> TimeRange:
    return TimeRange(start=workload.start.replace(second=0) - (NOW - workload.end), end=NOW, interval_s=60)


def _selection(name: str, workload: Workload, **overrides: Any) -> list[Variable]:
    """Variable states for a named selection; the options are what the variable queries return."""
    chosen = {
        "all": {"service": ALL, "model": ALL, "environment": ALL},
        "one": {"service": [SERVICES[0]], "model": ["gpt-4o-mini"], "environment": [ENVIRONMENTS[0]]},
        "multi": {
            "service": list(SERVICES),
            "model": ["gpt-4o-mini", "claude-sonnet-4"],
            "environment": ["production"],
        },
    }[name]
    values: dict[str, Any] = {
        "project": PROJECT,
        **chosen,
        "toxicity_threshold": "0.5",
        "search": "",
        "trace_id": workload.calls[0].trace_id,
        **overrides,
    }
    options = {"service": SERVICES, "model": tuple(MODELS), "environment": ENVIRONMENTS}
    return [Variable(name, value, options.get(name, ())) for name, value in values.items()]


def _run(
    store: Store, sql: str, variables: list[Variable], workload: Workload
) -> tuple[list[str], list[str], list]:
    result = store.query(expand(sql, variables, _time_range(workload)))
    return list(result.column_names), [t.name for t in result.column_types], result.result_rows


def _numeric(type_name: str) -> bool:
    inner = type_name.removeprefix("Nullable(").removesuffix(")")
    return inner.startswith(("UInt", "Int", "Float", "Decimal"))


def _check_shape(panel: dict[str, Any], columns: list[str], types: list[str], rows: list) -> None:
    """The columns the panel type needs: time + numbers, one stat row, linked columns, trace fields."""
    title = panel["title"]
    kind = panel["type"]
    if kind == "timeseries":
        assert columns[0] == "time" and types[0].startswith("DateTime"), (title, columns, types)
        assert any(_numeric(t) for t in types[1:]), (title, types)
        labels = [c for c, t in zip(columns[1:], types[1:], strict=True) if not _numeric(t)]
        assert all("String" in types[columns.index(c)] for c in labels), (title, types)
    elif kind == "stat":
        assert len(rows) == 1 and all(_numeric(t) for t in types), (title, types, rows)
    elif kind == "barchart":
        assert len(columns) >= 2 and "String" in types[0] and all(_numeric(t) for t in types[1:]), (
            title,
            types,
        )
    elif kind == "table":
        for override in panel["fieldConfig"]["overrides"]:
            assert override["matcher"]["options"] in columns, (title, override["matcher"], columns)
    elif kind == "traces":
        assert columns == TRACE_VIEW_COLUMNS, (title, columns)
    else:
        raise AssertionError(f"unexpected panel type {kind} in {title}")


@pytest.mark.parametrize("selection", ["all", "one", "multi"])
@pytest.mark.parametrize(
    ("dashboard", "panel"), _panels(), ids=lambda v: v if isinstance(v, str) else v["title"]
)
def test_panel_query_returns_rows_with_expected_columns(
    seeded: tuple[Store, Workload], dashboard: str, panel: dict[str, Any], selection: str
) -> None:
    store, workload = seeded
    for target in panel["targets"]:
        columns, types, rows = _run(store, target["rawSql"], _selection(selection, workload), workload)
        assert rows, f"{dashboard} / {panel['title']} returned no rows for selection {selection!r}"
        _check_shape(panel, columns, types, rows)


def _query(dashboard: str, title: str) -> str:
    (panel,) = [p for p in _dashboards()[dashboard]["panels"] if p["title"] == title]
    return panel["targets"][0]["rawSql"]


def _scalar(seeded: tuple[Store, Workload], dashboard: str, title: str, variables: list[Variable]) -> Any:
    store, workload = seeded
    _, _, rows = _run(store, _query(dashboard, title), variables, workload)
    return rows[0][0]


def test_variable_queries_list_the_seeded_values(seeded: tuple[Store, Workload]) -> None:
    store, workload = seeded
    expected = {
        "project": sorted([PROJECT, OTHER_PROJECT]),
        "service": sorted(SERVICES),
        "model": sorted(MODELS),
        "environment": sorted(ENVIRONMENTS),
    }
    for name, board in _dashboards().items():
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            _, _, rows = _run(store, variable["query"], _selection("all", workload), workload)
            assert [r[0] for r in rows] == expected[variable["name"]], (name, variable["name"])


@pytest.mark.parametrize("selection", ["all", "one", "multi"])
def test_overview_requests_match_the_workload(seeded: tuple[Store, Workload], selection: str) -> None:
    _, workload = seeded
    variables = _selection(selection, workload)
    chosen = {v.name: v.current for v in variables if v.name in ("service", "model", "environment")}
    where = {k: tuple(v) for k, v in chosen.items() if v != ALL}
    expected = workload.count(**where)
    assert 0 < expected <= len(workload.calls)
    assert _scalar(seeded, "overview", "Requests", variables) == expected


def test_every_panel_is_scoped_to_the_project(seeded: tuple[Store, Workload]) -> None:
    _, workload = seeded
    other = _selection("all", workload, project=OTHER_PROJECT)
    assert _scalar(seeded, "overview", "Requests", other) == workload.other_project_calls
    assert _scalar(seeded, "privacy", "Leaks caught by the server", other) == workload.other_project_leaks
    assert 0 < workload.other_project_leaks < workload.server_leaks


def test_error_rate_and_user_count(seeded: tuple[Store, Workload]) -> None:
    _, workload = seeded
    variables = _selection("all", workload)
    errors = workload.count(error=True)
    assert _scalar(seeded, "overview", "Error rate", variables) == pytest.approx(errors / len(workload.calls))
    assert _scalar(seeded, "overview", "Users", variables) == len(workload.by("user_id"))


def test_safety_toxic_rate_and_threshold(seeded: tuple[Store, Workload]) -> None:
    _, workload = seeded
    rate = _scalar(seeded, "safety", "Toxic outputs", _selection("all", workload))
    assert rate == pytest.approx(workload.count(toxic=True) / len(workload.calls))
    strict = _scalar(seeded, "safety", "Toxic outputs", _selection("all", workload, toxicity_threshold="0.9"))
    assert strict < rate


def test_privacy_and_guardrail_counts(seeded: tuple[Store, Workload]) -> None:
    _, workload = seeded
    variables = _selection("all", workload)
    assert _scalar(seeded, "privacy", "Leaks caught by the server", variables) == workload.server_leaks
    assert _scalar(seeded, "guardrails", "Blocks", variables) == workload.blocks


def test_privacy_model_filter_goes_through_llm_calls(seeded: tuple[Store, Workload]) -> None:
    _, workload = seeded
    variables = _selection("all", workload, model=["claude-sonnet-4"])
    expected = sum(c.leaked for c in workload.calls if c.model == "claude-sonnet-4")
    assert _scalar(seeded, "privacy", "Leaks caught by the server", variables) == expected


def test_alert_counts(seeded: tuple[Store, Workload]) -> None:
    _, workload = seeded
    variables = _selection("all", workload)
    assert _scalar(seeded, "alerts", "Firing", variables) == workload.firing_alerts
    assert _scalar(seeded, "alerts", "Resolved", variables) == workload.resolved_alerts
    assert _scalar(seeded, "alerts", "Failed deliveries", variables) == workload.failed_deliveries
    # Alerts carry service labels; a service no alert names selects none of them.
    assert _scalar(seeded, "alerts", "Firing", _selection("all", workload, service=["search-api"])) == 0


def test_trace_search_finds_a_users_traces(seeded: tuple[Store, Workload]) -> None:
    store, workload = seeded
    user = workload.calls[3].user_id
    _, _, rows = _run(store, _query("traces", "Traces"), _selection("all", workload, search=user), workload)
    assert {r[0] for r in rows} == {c.trace_id for c in workload.calls if c.user_id == user}


def test_trace_view_returns_the_whole_trace(seeded: tuple[Store, Workload]) -> None:
    store, workload = seeded
    call = workload.calls[7]
    (panel,) = [p for p in _dashboards()["traces"]["panels"] if p["type"] == "traces"]
    columns, _, rows = _run(
        store, panel["targets"][0]["rawSql"], _selection("all", workload, trace_id=call.trace_id), workload
    )
    spans = [dict(zip(columns, row, strict=True)) for row in rows]
    assert {s["traceID"] for s in spans} == {call.trace_id}
    assert sorted(s["operationName"] for s in spans) == sorted(["invoke_agent support", f"chat {call.model}"])
    root = next(s for s in spans if s["parentSpanID"] == "")
    assert any(s["parentSpanID"] == root["spanID"] for s in spans)
    assert {"key": "gen_ai.request.model", "value": call.model} in next(
        s for s in spans if s["parentSpanID"]
    )["tags"]


def _table(
    seeded: tuple[Store, Workload], dashboard: str, title: str, variables: list[Variable]
) -> list[dict]:
    store, workload = seeded
    columns, _, rows = _run(store, _query(dashboard, title), variables, workload)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_most_toxic_responses_show_the_response_text(seeded: tuple[Store, Workload]) -> None:
    _, workload = seeded
    rows = _table(seeded, "safety", "Most toxic responses", _selection("all", workload))
    toxic_traces = {c.trace_id for c in workload.calls if c.toxic}
    assert len(workload.calls) > 50 and len(rows) == 50  # the panel's LIMIT
    assert [r["toxicity"] for r in rows] == sorted((r["toxicity"] for r in rows), reverse=True)
    assert rows[0]["trace_id"] in toxic_traces and rows[0]["response"] == TOXIC_RESPONSE


def test_identity_groups_against_the_background(seeded: tuple[Store, Workload]) -> None:
    _, workload = seeded
    rows = _table(
        seeded, "safety", "Toxicity by identity group against the background", _selection("all", workload)
    )
    assert {r["identity_group"] for r in rows} == {
        c.identity_group for c in workload.calls if c.identity_group
    }
    for row in rows:
        mentioning = [c.toxic for c in workload.calls if c.identity_group == row["identity_group"]]
        others = [c.toxic for c in workload.calls if c.identity_group != row["identity_group"]]
        assert row["outputs"] == len(mentioning)
        assert row["toxic_rate"] == pytest.approx(sum(mentioning) / len(mentioning))
        assert row["background_toxic_rate"] == pytest.approx(sum(others) / len(others))
