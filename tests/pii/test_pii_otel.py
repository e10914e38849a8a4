"""The SDK span scrubber on real ReadableSpans from the OpenTelemetry SDK."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from veil import semconv as sc
from veil.pii.findings import decode_findings
from veil.pii.otel import default_span_scrubber


def _spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("chat gpt-4o") as parent:
        parent.set_attribute(
            sc.GEN_AI_INPUT_MESSAGES,
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": "I am jane@example.com"}]}]),
        )
        parent.set_attribute(
            sc.GEN_AI_OUTPUT_MESSAGES,
            json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "Hi jane@example.com"}]}]
            ),
        )
        parent.set_attribute("veil.tags", ["vip", "call +1-555-123-4567"])
        parent.set_attribute(sc.GEN_AI_USAGE_INPUT_TOKENS, 4111111111111111)  # ints are left alone
        parent.add_event("exception", {"exception.message": "card 4111 1111 1111 1111 declined"})
        with tracer.start_as_current_span("execute_tool lookup") as child:
            child.set_attribute(sc.GEN_AI_TOOL_CALL_ARGUMENTS, json.dumps({"email": "jane@example.com"}))
    with tracer.start_as_current_span("other trace") as other:
        other.set_attribute(sc.VEIL_INPUT, json.dumps({"q": "bob@example.com"}))
    return list(exporter.get_finished_spans())


def test_span_attributes_and_events_are_scrubbed_into_new_spans() -> None:
    spans = _spans()
    originals = [dict(s.attributes) for s in spans]
    out = default_span_scrubber(ner=False).scrub(spans)
    assert [dict(s.attributes) for s in spans] == originals  # the originals are not mutated
    child, parent, other = out
    assert parent is not spans[1] and parent.context == spans[1].context

    text = json.dumps(dict(parent.attributes)) + json.dumps(dict(child.attributes)) + str(parent.events)
    for raw in ("jane@example.com", "555-123-4567", "4111 1111 1111 1111"):
        assert raw not in text
    assert "[EMAIL_1]" in parent.attributes[sc.GEN_AI_INPUT_MESSAGES]
    assert "[EMAIL_1]" in parent.attributes[sc.GEN_AI_OUTPUT_MESSAGES]
    assert json.loads(child.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"email": "[EMAIL_1]"}  # same trace
    assert json.loads(other.attributes[sc.VEIL_INPUT]) == {"q": "[EMAIL_1]"}  # another trace restarts
    assert parent.attributes["veil.tags"] == ("vip", "call [PHONE_1]")
    assert parent.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 4111111111111111
    assert parent.events[0].attributes["exception.message"] == "card [CREDIT_CARD_1] declined"

    assert all(s.attributes[sc.VEIL_PII_SCRUBBED] is True for s in out)
    assert decode_findings(parent.attributes[sc.VEIL_PII_FINDINGS]) == {
        ("EMAIL_ADDRESS", "pattern", "input"): 1,
        ("EMAIL_ADDRESS", "pattern", "output"): 1,
        ("PHONE_NUMBER", "pattern", "attribute"): 1,
        ("CREDIT_CARD", "pattern", "attribute"): 1,
    }
    assert decode_findings(child.attributes[sc.VEIL_PII_FINDINGS]) == {
        ("EMAIL_ADDRESS", "pattern", "input"): 1
    }


def test_span_without_findings_is_marked_scrubbed_only() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("clean") as span:
        span.set_attribute(sc.VEIL_INPUT, "nothing to see")
    (out,) = default_span_scrubber(ner=False).scrub(exporter.get_finished_spans())
    assert out.attributes[sc.VEIL_PII_SCRUBBED] is True
    assert sc.VEIL_PII_FINDINGS not in out.attributes


def test_ner_follows_the_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VEIL_PII_NER", raising=False)
    assert default_span_scrubber().scrubber.ner_tier is None
    monkeypatch.setenv("VEIL_PII_NER", "1")
    assert default_span_scrubber().scrubber.ner_tier is not None  # the extra is installed here


def test_ner_requested_without_the_extra_falls_back_to_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("veil.pii.otel.ner_importable", lambda: False)
    assert default_span_scrubber(ner=True).scrubber.ner_tier is None


def test_values_the_walk_changed_are_exported_changed_even_without_findings() -> None:
    # A value over max_text_chars is truncated before scanning: its unscanned tail must not leave.
    spans = _spans()
    out = default_span_scrubber(ner=False, max_text_chars=8).scrub(spans)
    assert out[-1].attributes[sc.VEIL_INPUT] == '{"q": "b[TRUNCATED]'
