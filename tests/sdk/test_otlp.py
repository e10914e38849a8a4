"""`veil._otlp`: the encoder matches OTel's field for field; the exporter splits an over-size batch."""

from __future__ import annotations

import gzip

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as otel_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from veil._otlp import VeilOTLPExporter, encode_spans, gzip_bytes

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
RESOURCE = Resource({"service.name": "svc", "n": 3}, schema_url="https://example.com/schema")
OTHER_RESOURCE = Resource({"service.name": "other"})
SCOPE = InstrumentationScope("veil", "1.2.3", schema_url="https://example.com/scope", attributes={"a": 1})


def _span(
    span_id: int,
    *,
    resource: Resource = RESOURCE,
    scope: InstrumentationScope | None = SCOPE,
    parent: SpanContext | None = None,
    **kwargs: object,
) -> ReadableSpan:
    context = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        span_id,
        is_remote=False,
        trace_flags=_SAMPLED,
        trace_state=kwargs.pop("trace_state", None),  # type: ignore[arg-type]
    )
    return ReadableSpan(
        name=str(kwargs.pop("name", "chat gpt-4o")),
        context=context,
        parent=parent,
        resource=resource,
        instrumentation_scope=scope,
        start_time=1_700_000_000_000_000_000,
        end_time=1_700_000_000_250_000_000,
        **kwargs,  # type: ignore[arg-type]
    )


SPANS = [
    _span(
        1,
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.input.messages": "x" * 300 + " héllo ✓",
            "gen_ai.request.temperature": 0.2,
            "gen_ai.usage.input_tokens": 412,
            "negative": -7,
            "big": (1 << 63) - 1,
            "flag": False,
            "reasons": ("stop", "length"),
            "numbers": [1, 2, 3],
            "floats": [0.5],
            "bools": [True, False],
            "empty": "",
        },
        status=Status(StatusCode.OK),
    ),
    _span(
        2,
        parent=SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 1, is_remote=False, trace_flags=_SAMPLED),
        events=[
            Event("exception", {"exception.type": "ValueError", "exception.message": "bad"}, 1_700_000_000_1),
            Event("empty", None, 1_700_000_000_2),
        ],
        status=Status(StatusCode.ERROR, "ValueError"),
    ),
    _span(
        3,
        parent=SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 9, is_remote=True, trace_flags=_SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "x")]),
        links=[
            Link(SpanContext(5, 6, is_remote=True, trace_flags=_SAMPLED), {"link.attr": "v"}),
            Link(SpanContext(7, 8, is_remote=False, trace_flags=_SAMPLED)),
        ],
        kind=SpanKind.SERVER,
    ),
    _span(4, resource=OTHER_RESOURCE, scope=None, name="", kind=SpanKind.CONSUMER),
    _span(5, scope=InstrumentationScope("app"), name="ünïcode"),
]


def _decode(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_matches_otel_encoder(count: int) -> None:
    spans = SPANS[:count]
    assert _decode(encode_spans(spans)) == otel_encode_spans(spans)


def test_long_values_and_many_spans_match() -> None:
    spans = [_span(i + 1, attributes={"content": "y" * (i * 97), "i": i * 1_000_003}) for i in range(200)]
    assert _decode(encode_spans(spans)) == otel_encode_spans(spans)


def test_invalid_values_are_left_out_like_otel() -> None:
    span = _span(1, attributes={"ok": "v", "too_big": 1 << 70, "object": object()})  # type: ignore[dict-item]
    decoded = _decode(encode_spans([span]))
    keys = [kv.key for kv in decoded.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert keys == ["ok"]


def test_lone_surrogates_do_not_fail_the_batch() -> None:
    decoded = _decode(encode_spans([_span(1, attributes={"text": "a\ud800b"})]))
    assert decoded.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.string_value == "a?b"


def test_gzip_is_one_member() -> None:
    body = encode_spans(SPANS)
    assert gzip.decompress(gzip_bytes(body)) == body


def test_an_oversize_batch_is_sent_in_parts(otlp_receiver) -> None:
    spans = [_span(i + 1, attributes={"content": "z" * 1000}) for i in range(10)]
    exporter = VeilOTLPExporter(f"{otlp_receiver.url}/v1/traces", max_request_size=4000)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.export([_span(99, attributes={"content": "z" * 5000})]) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert len(otlp_receiver.requests) > 2
    assert sorted(int(s.span_id, 16) for s in otlp_receiver.spans) == list(range(1, 11))
