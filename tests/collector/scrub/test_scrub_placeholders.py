"""Placeholders of the SDK and of the collector within one trace: the real SDK span scrubber, the real
collector passes, spans encoded by the OTel SDK's own OTLP encoder.

The SDK numbers a trace's values in the app's process; the collector numbers what the SDK missed (or
what a plain OpenTelemetry service sent) without seeing every span of the trace first: spans arrive in
any order, on any replica, before or after a restart. Whatever the order, one placeholder must never
stand for two values.
"""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from veil import semconv as sc
from veil.pii.operators import REPLACEMENT
from veil.pii.otel import default_span_scrubber
from veil_collector.scrub import ServerScrubber


def _gateway_and_app_spans(gateway_text: str, app_text: str) -> tuple[ReadableSpan, ReadableSpan]:
    """One trace across two services: a gateway on plain OpenTelemetry (nothing scrubbed) calls an app
    instrumented with the Veil SDK (scrubbed in its process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("gateway") as gateway:
        gateway.set_attribute(sc.GEN_AI_INPUT_MESSAGES, gateway_text)
        with tracer.start_as_current_span("chat gpt-4o") as app:
            app.set_attribute(sc.GEN_AI_INPUT_MESSAGES, app_text)
    app_span, gateway_span = exporter.get_finished_spans()
    assert app_span.context.trace_id == gateway_span.context.trace_id
    return gateway_span, app_span


def _text(request: ExportTraceServiceRequest) -> str:
    (span,) = request.resource_spans[0].scope_spans[0].spans
    return next(kv.value.string_value for kv in span.attributes if kv.key == sc.GEN_AI_INPUT_MESSAGES)


def _placeholders(text: str) -> list[str]:
    return REPLACEMENT.findall(text)


@pytest.mark.parametrize("order", ["collector first", "sdk first"])
@pytest.mark.parametrize("replicas", [1, 2])
def test_collector_and_sdk_placeholders_of_a_trace_never_collide(order: str, replicas: int) -> None:
    # The collision this guards against: the gateway's span reaches the collector first and its address
    # is numbered there; the app's span, scrubbed by the SDK (which numbered another address in its own
    # process), comes later, or to another replica that never saw the gateway's. Both numbered "the first
    # e-mail address of the trace".
    gateway, app = _gateway_and_app_spans("forwarded for bob@example.org", "I am alice@example.com")
    collectors = [ServerScrubber(ner_enabled=False) for _ in range(replicas)]
    from_gateway = encode_spans([gateway])
    from_app = encode_spans(default_span_scrubber(ner=False).scrub([app]))

    arrivals = [(collectors[0], from_gateway), (collectors[-1], from_app)]
    for collector, request in arrivals if order == "collector first" else arrivals[::-1]:
        collector.fast_pass(request)

    bob, alice = _text(from_gateway), _text(from_app)
    assert set(_placeholders(bob)).isdisjoint(_placeholders(alice))
    assert alice == "I am [EMAIL_1]"  # the SDK's numbering, untouched by the collector
    assert bob == "forwarded for [EMAIL_c1]"


@pytest.mark.timeout(120)
def test_ner_placeholders_of_the_collector_and_the_sdk_never_collide() -> None:
    gateway, app = _gateway_and_app_spans("Forwarded for John Smith.", "My name is Maria Garcia.")
    collector = ServerScrubber(ner_enabled=True)
    from_gateway = encode_spans([gateway])
    collector.fast_pass(from_gateway)
    assert collector.ner_pass(from_gateway) == 1
    # The SDK with NER on numbered Maria Garcia [PERSON_1] in the app's process; the span arrives later.
    from_app = encode_spans(default_span_scrubber(ner=True).scrub([app]))
    collector.fast_pass(from_app)
    assert collector.ner_pass(from_app) == 0

    assert _text(from_gateway) == "Forwarded for [PERSON_c1]."
    assert _text(from_app) == "My name is [PERSON_1]."


def _request(trace_id: bytes, *texts: str) -> ExportTraceServiceRequest:
    """A request of one span per text, all in ``trace_id``, each text in a content attribute."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for n, text in enumerate(texts, 1):
        span = spans.add(trace_id=trace_id, span_id=n.to_bytes(8, "big"), name=f"span {n}")
        span.attributes.append(KeyValue(key=sc.GEN_AI_INPUT_MESSAGES, value=AnyValue(string_value=text)))
    return request


def _texts(request: ExportTraceServiceRequest) -> list[str]:
    return [
        next(kv.value.string_value for kv in span.attributes if kv.key == sc.GEN_AI_INPUT_MESSAGES)
        for span in request.resource_spans[0].scope_spans[0].spans
    ]


def test_collector_placeholders_are_consistent_within_a_trace_across_requests() -> None:
    collector = ServerScrubber(ner_enabled=False)
    trace, other_trace = bytes(range(16)), bytes(range(1, 17))
    first = _request(trace, "mail bob@example.org", "call 555-123-4567")
    later = _request(trace, "cc Bob@Example.org and eve@example.net", "[EMAIL_1] called 555 123 4567")
    other = _request(other_trace, "mail eve@example.net")
    for request in (first, later, other):
        collector.fast_pass(request)

    assert _texts(first) == ["mail [EMAIL_c1]", "call [PHONE_c1]"]
    # The same values (e-mail case and phone punctuation normalized) keep their placeholders; a new one
    # gets the next collector number; the SDK's [EMAIL_1] stays what it is.
    assert _texts(later) == ["cc [EMAIL_c1] and [EMAIL_c2]", "[EMAIL_1] called [PHONE_c1]"]
    assert _texts(other) == ["mail [EMAIL_c1]"]  # another trace numbers on its own


@pytest.mark.timeout(120)
def test_collector_ner_placeholders_are_consistent_within_a_trace_across_requests() -> None:
    collector = ServerScrubber(ner_enabled=True)
    trace = bytes(range(16))
    first = _request(trace, "I am John Smith.")
    later = _request(trace, "Thanks, John Smith. Maria Garcia says hello.")
    for request in (first, later):
        collector.fast_pass(request)
        collector.ner_pass(request)

    assert _texts(first) == ["I am [PERSON_c1]."]
    assert _texts(later) == ["Thanks, [PERSON_c1]. [PERSON_c2] says hello."]


@pytest.mark.timeout(120)
def test_sdk_and_earlier_collector_placeholders_pass_through_the_collector_untouched() -> None:
    collector = ServerScrubber(ner_enabled=True)
    texts = (
        "[PERSON_1] met [PERSON_2] in [LOCATION_1] and mailed [EMAIL_1] from [IP_3].",
        '[{"role": "user", "content": "[CREDIT_CARD_1] of [PERSON_c1], [PHONE:0123456789abcdef]"}]',
        "[EMAIL_c2] called [PHONE_12] about [NRP_1] friends",
    )
    request = _request(bytes(range(16)), *texts)
    before = request.SerializeToString()

    assert collector.fast_pass(request) == 0
    assert collector.ner_pass(request) == 0
    assert request.SerializeToString() == before  # no text changed, no findings attribute added
