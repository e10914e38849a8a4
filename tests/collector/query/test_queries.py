"""Read queries on a real embedded ClickHouse: filters, keyset paging, span trees, stats, project scope."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from query_rows import T0, call_row, minutes, span_id, span_row, trace_id

from veil_collector.records import Evaluation, PiiFinding
from veil_collector.store import Store
from veil_collector.store.queries import (
    InvalidCursor,
    TraceFilter,
    decode_cursor,
    encode_cursor,
    from_unix_nanos,
    get_stats,
    get_trace,
    list_traces,
    to_unix_nanos,
)

WINDOW = {"start": T0 - minutes(60), "end": T0 + minutes(60)}


def _trace(n: int, *, at_minute: float, project: str = "p1", **root: object) -> list[tuple]:
    """A two-span trace: a root agent span and one chat child."""
    at = T0 + minutes(at_minute)
    return [
        span_row(trace=trace_id(n), span=span_id(n * 10), name=f"invoke_agent a{n}", at=at, project=project,
                 duration_ms=root.pop("duration_ms", 50.0), **root),
        span_row(trace=trace_id(n), span=span_id(n * 10 + 1), parent=span_id(n * 10), name="chat gpt-4o",
                 at=at + minutes(0.0001), duration_ms=20.0, project=project,
                 attributes={"gen_ai.request.model": "gpt-4o"}),
    ]  # fmt: skip


def test_list_traces_summarizes_each_trace(store: Store, insert: Callable[..., None]) -> None:
    insert(
        spans=_trace(1, at_minute=0, attributes={"user.id": "u1", "session.id": "s1"}, service="api"),
        calls=[
            call_row(trace=trace_id(1), span=span_id(11), model="gpt-4o", input_tokens=7, output_tokens=3)
        ],
    )
    page = list_traces(store, project_id="p1", query=TraceFilter(**WINDOW))
    assert page.next_cursor is None
    [trace] = page.traces
    assert trace.trace_id == trace_id(1)
    assert trace.root_span_name == "invoke_agent a1"
    assert trace.service_name == "api"
    assert trace.span_count == 2
    assert trace.status == "ok" and trace.error_count == 0
    assert trace.models == ["gpt-4o"]
    assert (trace.user_id, trace.session_id) == ("u1", "s1")
    assert (trace.input_tokens, trace.output_tokens, trace.cost_usd) == (7, 3, pytest.approx(0.001))
    assert trace.start == T0
    assert trace.duration_ms == pytest.approx(50.0)


def test_each_filter_selects_the_matching_trace(store: Store, insert: Callable[..., None]) -> None:
    insert(
        spans=[
            *_trace(1, at_minute=0, service="api", attributes={"user.id": "alice", "session.id": "s-a"}),
            *_trace(
                2,
                at_minute=1,
                service="worker",
                status="Error",
                duration_ms=900.0,
                attributes={"user.id": "bob", "gen_ai.conversation.id": "conv-b"},
            ),
            span_row(
                trace=trace_id(3),
                span=span_id(30),
                at=T0 + minutes(2),
                name="chat claude-3-haiku",
                attributes={"gen_ai.request.model": "claude-3-haiku"},
            ),
        ],
        # The model filter reads llm_calls: trace 3 called claude, traces 1 and 2 (their chat child) gpt-4o.
        calls=[
            call_row(trace=trace_id(3), span=span_id(30), model="claude-3-haiku", at=T0 + minutes(2)),
            call_row(trace=trace_id(2), span=span_id(21), model="gpt-4o", at=T0 + minutes(1)),
            call_row(trace=trace_id(1), span=span_id(11), model="gpt-4o"),
        ],
    )

    def ids(**filters: object) -> list[str]:
        return [
            t.trace_id
            for t in list_traces(store, project_id="p1", query=TraceFilter(**{**WINDOW, **filters})).traces
        ]

    assert ids() == [trace_id(3), trace_id(2), trace_id(1)]  # newest first
    assert ids(service="worker") == [trace_id(2)]
    assert ids(model="claude-3-haiku") == [trace_id(3)]
    assert ids(model="gpt-4o") == [trace_id(2), trace_id(1)]
    assert ids(user_id="alice") == [trace_id(1)]
    assert ids(session_id="conv-b") == [trace_id(2)]  # gen_ai.conversation.id counts as the session
    assert ids(session_id="s-a") == [trace_id(1)]
    assert ids(status="error") == [trace_id(2)]
    assert ids(status="ok") == [trace_id(3), trace_id(1)]
    assert ids(min_duration_ms=500) == [trace_id(2)]
    assert ids(user_id="nobody") == []
    assert ids(start=T0 + minutes(1.5), end=T0 + minutes(10)) == [trace_id(3)]


def test_keyset_cursor_walks_every_trace_once(store: Store, insert: Callable[..., None]) -> None:
    # Two traces share a start time, so the cursor must break ties on the trace id.
    spans = [row for n in range(1, 8) for row in _trace(n, at_minute=n // 2)]
    insert(spans=spans)
    seen, cursor = [], None
    while True:
        page = list_traces(store, project_id="p1", query=TraceFilter(**WINDOW, limit=3, cursor=cursor))
        seen.extend(t.trace_id for t in page.traces)
        cursor = page.next_cursor
        if cursor is None:
            break
    expected = sorted((trace_id(n) for n in range(1, 8)), key=lambda t: (int(t, 16) // 2, t), reverse=True)
    assert seen == expected


def test_cursor_round_trip_and_tampering() -> None:
    assert decode_cursor(encode_cursor(123, "ab")) == (123, "ab")
    for bad in ("not-a-cursor", "", encode_cursor(1, "x")[:-3] + "!!!", "WzEsMiwzXQ"):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be between"),
        ({"limit": 1001}, "limit must be between"),
        ({"start": T0, "end": T0}, "must be after its start"),
        ({"min_duration_ms": -1.0}, "min_duration_ms"),
        ({"min_duration_ms": float("nan")}, "min_duration_ms"),
    ],
)
def test_trace_filter_refuses_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TraceFilter(**{**WINDOW, **kwargs})


def test_queries_never_cross_projects(store: Store, insert: Callable[..., None]) -> None:
    insert(
        spans=[*_trace(1, at_minute=0, project="p1"), *_trace(2, at_minute=0, project="p2")],
        calls=[call_row(trace=trace_id(2), span=span_id(21), model="gpt-4o", project="p2")],
    )
    assert [t.trace_id for t in list_traces(store, project_id="p1", query=TraceFilter(**WINDOW)).traces] == [
        trace_id(1)
    ]
    assert get_trace(store, project_id="p1", trace_id=trace_id(2)) is None
    assert get_trace(store, project_id="p2", trace_id=trace_id(2)) is not None
    p1 = get_stats(store, project_id="p1", **WINDOW)
    assert (p1.traces, p1.spans, p1.llm_calls) == (1, 2, 0)


def test_get_trace_builds_the_span_tree(store: Store, insert: Callable[..., None]) -> None:
    t = trace_id(9)
    root, tool, chat, orphan = span_id(1), span_id(2), span_id(3), span_id(4)
    insert(
        spans=[
            span_row(trace=t, span=root, name="invoke_agent travel", duration_ms=300),
            span_row(
                trace=t,
                span=chat,
                parent=root,
                name="chat gpt-4o",
                at=T0 + minutes(0.002),
                attributes={"gen_ai.request.model": "gpt-4o"},
                status="Error",
                message="rate limited",
                events=[(T0 + minutes(0.003), "exception", {"exception.type": "RateLimitError"})],
            ),
            span_row(trace=t, span=tool, parent=root, name="execute_tool weather", at=T0 + minutes(0.001)),
            span_row(trace=t, span=orphan, parent=span_id(99), name="late child", at=T0 + minutes(0.004)),
        ],
        calls=[call_row(trace=t, span=chat, model="gpt-4o", cost=0.25)],
        evaluations=[
            Evaluation(
                project_id="p1",
                timestamp=T0,
                evaluated_at=T0,
                trace_id=t,
                span_id=chat,
                service_name="svc",
                environment="test",
                request_model="gpt-4o",
                target="output",
                evaluator="toxicity",
                label="toxic",
                score=0.875,
                model_name="detoxify-original",
                model_version="0.5.4",
                explanation="scored by detoxify",
            ),
            Evaluation(
                project_id="p2",
                timestamp=T0,
                evaluated_at=T0,
                trace_id=t,
                span_id=chat,
                service_name="svc",
                environment="test",
                request_model="gpt-4o",
                target="output",
                evaluator="leak",
                label="x",
                score=1.0,
                model_name="m",
                model_version="",
            ),
        ],
        pii=[
            PiiFinding(
                project_id="p1",
                timestamp=T0,
                trace_id=t,
                span_id=chat,
                service_name="svc",
                entity_type="EMAIL_ADDRESS",
                count=2,
                detector="pattern",
                location="input",
                source="sdk",
                sdk_scrubbed=True,
                sdk_missed=False,
            )
        ],
    )
    detail = get_trace(store, project_id="p1", trace_id=t)
    assert detail is not None
    assert detail.span_count == 4
    assert detail.duration_ms == pytest.approx(300.0)
    assert [s.name for s in detail.spans] == ["invoke_agent travel", "late child"]
    agent = detail.spans[0]
    assert [c.name for c in agent.children] == ["execute_tool weather", "chat gpt-4o"]  # start order
    chat_node = agent.children[1]
    assert chat_node.status == "Error" and chat_node.status_message == "rate limited"
    assert chat_node.attributes == {"gen_ai.request.model": "gpt-4o"}
    assert chat_node.resource_attributes == {"service.name": "svc"}
    assert chat_node.cost_usd == pytest.approx(0.25)
    assert [(e.name, e.attributes) for e in chat_node.events] == [
        ("exception", {"exception.type": "RateLimitError"})
    ]
    [evaluation] = chat_node.evaluations  # the other project's evaluation is not shown
    assert (evaluation.name, evaluation.score, evaluation.label, evaluation.target) == (
        "toxicity",
        0.875,
        "toxic",
        "output",
    )
    assert evaluation.model == "detoxify-original@0.5.4"
    assert [(p.entity_type, p.count, p.location) for p in chat_node.pii_findings] == [
        ("EMAIL_ADDRESS", 2, "input")
    ]
    assert agent.children[0].cost_usd is None and agent.children[0].evaluations == []


def test_get_trace_survives_a_parent_cycle(store: Store, insert: Callable[..., None]) -> None:
    t = trace_id(5)
    insert(
        spans=[
            span_row(trace=t, span=span_id(1), parent=span_id(2), name="a"),
            span_row(trace=t, span=span_id(2), parent=span_id(1), name="b", at=T0 + minutes(0.001)),
        ]
    )
    detail = get_trace(store, project_id="p1", trace_id=t)
    assert detail is not None
    [root] = detail.spans
    assert root.name == "a" and [c.name for c in root.children] == ["b"]


def test_unknown_trace_is_none(store: Store) -> None:
    assert get_trace(store, project_id="p1", trace_id=trace_id(404)) is None


def test_stats_count_latency_tokens_and_cost_by_model(store: Store, insert: Callable[..., None]) -> None:
    calls = [
        call_row(trace=trace_id(1), span=span_id(i), model="gpt-4o", duration_ms=100.0 * i, cost=0.01)
        for i in range(1, 11)
    ]
    calls.append(call_row(trace=trace_id(2), span=span_id(50), model="acme-7b", cost=None, status="Error",
                          provider="acme", input_tokens=5, output_tokens=0))  # fmt: skip
    calls.append(call_row(trace=trace_id(3), span=span_id(51), model="gpt-4o", at=T0 - minutes(120)))
    # Tool and agent spans are in llm_calls too, but they are not model calls.
    calls.append(call_row(trace=trace_id(1), span=span_id(52), model="", operation="execute_tool", cost=None))
    insert(
        spans=[*_trace(1, at_minute=0), *_trace(2, at_minute=1)],
        calls=calls,
        pii=[
            PiiFinding(
                project_id="p1",
                timestamp=T0,
                trace_id=trace_id(1),
                span_id=span_id(1),
                service_name="svc",
                entity_type=entity,
                count=count,
                detector="pattern",
                location="input",
                source=source,
                sdk_scrubbed=True,
                sdk_missed=source == "server",
            )
            for entity, count, source in [("EMAIL_ADDRESS", 2, "sdk"), ("PHONE_NUMBER", 1, "server")]
        ],
    )
    insert(
        evaluations=[
            Evaluation(
                project_id=project, timestamp=T0, evaluated_at=T0, trace_id=trace_id(1), span_id=span_id(i),
                service_name="svc", environment="test", request_model="gpt-4o", target="output",
                evaluator="toxicity", label="insult", score=score, model_name="m", model_version="1",
            )
            for i, (score, project) in enumerate([(0.1, "p1"), (0.5, "p1"), (0.97, "p1"), (0.99, "p2")])
        ]
    )  # fmt: skip
    stats = get_stats(store, project_id="p1", **WINDOW)
    [toxicity] = stats.evaluations
    assert (toxicity.name, toxicity.label, toxicity.scored, toxicity.flagged) == ("toxicity", "insult", 3, 2)
    assert toxicity.max_score == pytest.approx(0.97)
    assert (stats.traces, stats.spans, stats.error_spans) == (2, 4, 0)
    assert (stats.llm_calls, stats.llm_errors) == (11, 1)
    assert (stats.input_tokens, stats.output_tokens) == (105, 200)
    assert stats.cost_usd == pytest.approx(0.10)
    assert stats.unpriced_calls == 1
    gpt, acme = stats.by_model
    assert (gpt.model, gpt.provider, gpt.calls, gpt.errors, gpt.unpriced_calls) == (
        "gpt-4o",
        "openai",
        10,
        0,
        0,
    )
    assert gpt.cost_usd == pytest.approx(0.10)
    assert (gpt.latency_ms.p50, gpt.latency_ms.p95, gpt.latency_ms.p99) == (600.0, 1000.0, 1000.0)
    assert (acme.model, acme.calls, acme.errors, acme.cost_usd, acme.unpriced_calls) == (
        "acme-7b",
        1,
        1,
        None,
        1,
    )
    assert stats.latency_ms.p50 == pytest.approx(500.0)  # 100, 100, 200, ..., 1000
    assert {(p.entity_type, p.source, p.count) for p in stats.pii_findings} == {
        ("EMAIL_ADDRESS", "sdk", 2),
        ("PHONE_NUMBER", "server", 1),
    }
    assert stats.pii_findings_total == 3

    by_service = get_stats(store, project_id="p1", service="elsewhere", **WINDOW)
    assert (by_service.traces, by_service.llm_calls, by_service.pii_findings_total) == (0, 0, 0)
    assert by_service.evaluations == []
    assert by_service.cost_usd is None
    assert by_service.latency_ms.p50 is None


def test_stats_refuses_an_empty_window(store: Store) -> None:
    with pytest.raises(ValueError, match="must be after its start"):
        get_stats(store, project_id="p1", start=T0, end=T0 - minutes(1))


def test_unix_nanos_round_trip_treats_naive_as_utc() -> None:
    moment = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert to_unix_nanos(moment.replace(tzinfo=None)) == to_unix_nanos(moment) == 1_777_636_800_000_000_000
    assert from_unix_nanos(1_777_636_800_000_001_500) == moment.replace(microsecond=1)
