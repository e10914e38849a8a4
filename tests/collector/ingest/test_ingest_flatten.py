"""Flattening rules (exporter-compatible values, GenAI rows, guard events) and the cluster DDL rewrite."""

from __future__ import annotations

import json

import pytest
from ingest_spans import genai_span, kv, messages, request_of
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from veil_collector.store.cluster import render_cluster_statements
from veil_collector.store.flatten import FlatBatch, Flattener, as_string, format_double, message_text
from veil_collector.store.migrate import load_migrations

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1"), (0.5, "0.5"), (-2.25, "-2.25"), (1e-7, "1e-7"), (0.000001, "0.000001"), (1e21, "1e+21"),
     (123456789.0, "123456789"), (0.1 + 0.2, "0.30000000000000004")],
)  # fmt: skip
def test_doubles_are_formatted_like_pdata(value, text):
    assert format_double(value) == text


def test_attribute_values_are_stringified_like_pdata():
    nested = KeyValueList(values=[kv("z", 1), kv("a", "<b>&")])
    assert as_string(AnyValue(bool_value=True)) == "true"
    assert as_string(AnyValue(int_value=-3)) == "-3"
    assert as_string(AnyValue(bytes_value=b"\x00\xff")) == "AP8="
    assert (
        as_string(
            AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="x"), AnyValue(int_value=2)]))
        )
        == '["x",2]'
    )
    assert as_string(AnyValue(kvlist_value=nested)) == '{"a":"\\u003cb\\u003e\\u0026","z":1}'
    assert as_string(AnyValue()) == ""


@pytest.mark.parametrize(
    "items",
    [["stop"], ["a", "b"], ['q"uote', "back\\slash", "new\nline", "<b>&", "\u2028", "é✓", "\x01"], ["x", ""]],
)
def test_string_arrays_are_stringified_like_go_json(items):
    value = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=item) for item in items]))
    expected = (
        json.dumps(items, separators=(",", ":"), ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
    )
    assert as_string(value) == expected


def test_message_text_joins_text_parts_and_skips_others():
    document = json.dumps(
        [
            {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {"role": "user", "parts": [{"type": "image", "uri": "x"}, {"type": "text", "content": "hi"}]},
        ]
    )
    assert message_text(document) == "be brief\nhi"
    assert message_text("not json") == ""
    assert message_text(None) == ""


def flatten(*spans: Span, cost=None) -> FlatBatch:
    out = FlatBatch()
    Flattener(cost_usd=cost).flatten([("proj", request_of(list(spans)))], batch=42, out=out)
    return out


def test_inference_spans_become_llm_calls_with_cost_and_content():
    span = genai_span(TRACE, SPAN, start_ns=1_700_000_000_000_000_000)
    seen = []

    def cost(model, tokens_in, tokens_out):
        seen.append(model)
        return 0.5 if model == "gpt-4o-mini" else None

    out = flatten(span, cost=cost)

    row = dict(zip(out.tables()[1][1], out.llm_calls[0], strict=True))
    assert seen == ["gpt-4o-mini-2024-07-18", "gpt-4o-mini"]  # the dated response model first
    assert row["CostUsd"] == 0.5
    assert (row["TraceId"], row["SpanId"], row["VeilBatch"]) == (TRACE.hex(), SPAN.hex(), 42)
    assert (row["Operation"], row["Provider"], row["InputTokens"], row["OutputTokens"]) == (
        "chat",
        "openai",
        412,
        96,
    )
    assert (row["UserId"], row["SessionId"], row["Environment"]) == ("user-42", "session-7", "test")
    call = out.calls[0]
    assert call.project_id == "proj" and call.request_model == "gpt-4o-mini"
    assert call.input_text.startswith("You are a support assistant")


def test_legacy_genai_attributes_are_accepted():
    span = Span(
        trace_id=TRACE,
        span_id=SPAN,
        name="openai.chat",
        start_time_unix_nano=1,
        end_time_unix_nano=2,
        attributes=[
            kv("gen_ai.system", "openai"),
            kv("llm.request.type", "completion"),
            kv("gen_ai.request.model", "gpt-3.5-turbo-instruct"),
            kv("gen_ai.usage.prompt_tokens", 10),
            kv("gen_ai.usage.completion_tokens", 4),
            kv("gen_ai.prompt.1.content", "second"),
            kv("gen_ai.prompt.0.content", "first"),
            kv("gen_ai.completion.0.content", "answer"),
        ],
    )

    out = flatten(span)

    row = dict(zip(out.tables()[1][1], out.llm_calls[0], strict=True))
    assert (row["Provider"], row["Operation"], row["InputTokens"], row["OutputTokens"]) == (
        "openai", "text_completion", 10, 4,
    )  # fmt: skip
    assert row["CostUsd"] is None
    assert (out.calls[0].input_text, out.calls[0].output_text) == ("first\nsecond", "answer")


def test_non_inference_spans_only_reach_otel_traces():
    tool = Span(
        trace_id=TRACE,
        span_id=SPAN,
        name="execute_tool search",
        attributes=[kv("gen_ai.operation.name", "execute_tool"), kv("veil.input", messages("user", "x"))],
    )
    out = flatten(tool)
    assert len(out.traces) == 1 and not out.llm_calls and not out.calls


def test_guard_events_become_guard_decisions():
    span = genai_span(TRACE, SPAN, start_ns=5_000)
    event = span.events.add(time_unix_nano=6_000, name="veil.guard")
    event.attributes.extend(
        [
            kv("veil.guard.check", "toxicity"),
            kv("veil.guard.decision", "block"),
            kv("veil.guard.score", 0.93),
            kv("veil.guard.target", "output"),
        ]
    )
    span.events.add(time_unix_nano=7_000, name="unrelated")

    (decision,) = flatten(span).guard_decisions

    assert (decision.check, decision.decision, decision.score, decision.target) == (
        "toxicity",
        "block",
        0.93,
        "output",
    )
    assert (decision.trace_id, decision.request_model, decision.source, decision.veil_batch) == (
        TRACE.hex(), "gpt-4o-mini", "sdk", 42,
    )  # fmt: skip


def test_flattening_is_deterministic():
    request = request_of([genai_span(TRACE, SPAN, start_ns=10)])
    first, second = FlatBatch(), FlatBatch()
    Flattener().flatten([("p", request)], batch=1, out=first)
    Flattener().flatten([("p", request)], batch=1, out=second)
    assert first.tables() == second.tables()


def test_flattening_without_calls_writes_the_same_rows():
    request = request_of([genai_span(TRACE, SPAN, start_ns=10)])
    with_calls, without = FlatBatch(), FlatBatch()
    Flattener().flatten([("p", request)], batch=1, out=with_calls)
    Flattener().flatten([("p", request)], batch=1, out=without, calls=False)
    assert len(with_calls.calls) == 1 and without.calls == []
    assert without.tables() == with_calls.tables()


def test_cluster_rendering_parses_and_uses_replicated_and_distributed_engines(store):
    statements = [s for m in load_migrations() for s in m.statements(ttl_days=30)]

    rendered = render_cluster_statements(statements, "veil_cluster")

    for statement in rendered:
        assert "ON CLUSTER veil_cluster" in statement
        store.query("SELECT formatQuery({q:String})", {"q": statement})  # raises on a syntax error
    local = next(s for s in rendered if s.startswith("CREATE TABLE IF NOT EXISTS otel_traces_local"))
    assert (
        "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/otel_traces_local', '{replica}')" in local
    )
    assert "replicated_deduplication_window = 10000" in local
    assert (
        "CREATE TABLE IF NOT EXISTS otel_traces ON CLUSTER veil_cluster AS otel_traces_local "
        "ENGINE = Distributed(veil_cluster, currentDatabase(), otel_traces_local, cityHash64(TraceId))"
    ) in rendered
    keys = next(s for s in rendered if s.startswith("CREATE TABLE IF NOT EXISTS api_keys_local"))
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/api_keys_local', "
        "'{replica}', UpdatedAt)" in keys
    )
    view = next(s for s in rendered if "MATERIALIZED VIEW" in s)
    assert "TO otel_traces_trace_id_ts_local" in view and "FROM otel_traces_local" in view


def test_cluster_rendering_refuses_bad_input():
    with pytest.raises(ValueError, match="plain identifier"):
        render_cluster_statements([], "bad name; DROP")
    with pytest.raises(ValueError, match="cannot render"):
        render_cluster_statements(["ALTER TABLE x ADD COLUMN y UInt8"], "c")
