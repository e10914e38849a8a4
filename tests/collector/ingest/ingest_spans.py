"""Builders of OTLP trace requests for the ingest tests and the ingest benchmark."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

# The JSON example of the OTLP specification (opentelemetry-proto examples/trace.json): hex ids in upper
# case, camelCase keys, an integer enum, int64 values as strings.
OTLP_SPEC_JSON_EXAMPLE = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
            "scopeSpans": [
                {
                    "scope": {
                        "name": "my.library",
                        "version": "1.0.0",
                        "attributes": [
                            {"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}
                        ],
                    },
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "parentSpanId": "EEE19B7EC3C1B173",
                            "name": "I'm a server span",
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "kind": 2,
                            "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}],
                        }
                    ],
                }
            ],
        }
    ]
}

_PROMPT = (
    "You are a support assistant for an online bookshop. Answer politely and cite the order number. "
    "The customer writes: I ordered three books last week and only two arrived; the parcel was damaged "
    "and the receipt is missing. Could you check the shipping status and tell me when the rest arrives? "
)
_ANSWER = (
    "I am sorry about the damaged parcel. The third book left our warehouse yesterday and should arrive "
    "within two working days; I have attached a new receipt and a prepaid return label for the damage. "
)


def kv(key: str, value: str | int | float | bool | list[str]) -> KeyValue:
    """One attribute as OTLP encodes it."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        items = [AnyValue(string_value=item) for item in value]
        return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=items)))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def genai_span(trace_id: bytes, span_id: bytes, *, start_ns: int, content_bytes: int = 1500) -> Span:
    """A chat span with semconv attributes and ``content_bytes`` of prompt and answer text."""
    prompt = (_PROMPT * (content_bytes // len(_PROMPT) + 1))[: content_bytes * 2 // 3]
    answer = (_ANSWER * (content_bytes // len(_ANSWER) + 1))[: content_bytes // 3]
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        name="chat gpt-4o-mini",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + 850_000_000,
        attributes=[
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "gpt-4o-mini"),
            kv("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            kv("gen_ai.usage.input_tokens", 412),
            kv("gen_ai.usage.output_tokens", 96),
            kv("gen_ai.response.finish_reasons", ["stop"]),
            kv("gen_ai.request.temperature", 0.2),
            kv("gen_ai.input.messages", messages("user", prompt)),
            kv("gen_ai.output.messages", messages("assistant", answer)),
            kv("user.id", "user-42"),
            kv("session.id", "session-7"),
            kv("veil.kind", "llm"),
            kv("veil.tags", ["bench", "support"]),
        ],
        status=Status(code=Status.STATUS_CODE_OK),
    )


def request_of(spans: list[Span], *, service: str = "shop-assistant") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [kv("service.name", service), kv("deployment.environment.name", "test")]
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "veil"
    scope_spans.scope.version = "0.1.0"
    scope_spans.spans.extend(spans)
    return request


def unique_ids(prefix: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """Distinct (trace id, span id) pairs: random trace ids, so parallel senders never collide."""
    counter = 0
    while True:
        counter += 1
        yield os.urandom(12) + prefix.to_bytes(4, "big"), counter.to_bytes(8, "big")


def genai_request(count: int, ids: Iterator[tuple[bytes, bytes]] | None = None) -> ExportTraceServiceRequest:
    """A request of ``count`` realistic chat spans with fresh ids."""
    ids = ids if ids is not None else unique_ids()
    now = time.time_ns()
    return request_of([genai_span(*next(ids), start_ns=now) for _ in range(count)])
