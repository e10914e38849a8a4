"""The collector's PII passes on real ExportTraceServiceRequests (encoded by the OTel SDK's own OTLP
encoder, as a plain OpenTelemetry exporter would send them), and pii_findings rows in real ClickHouse."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from veil import semconv as sc
from veil.pii import NerUnavailableError, _seeds
from veil.pii.findings import decode_findings
from veil.pii.operators import collector_placeholder
from veil_collector.records import PiiFinding
from veil_collector.scrub import ServerScrubber, pii_findings_for_span

RAW = ("jane@example.com", "4111 1111 1111 1111", "+1-555-123-4567", "203.0.113.77", "John Smith", "Berlin")


def _request() -> ExportTraceServiceRequest:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "svc", "owner": "ops jane@example.com"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("seed") as seed:
        pass
    with tracer.start_as_current_span(
        "chat gpt-4o", links=[Link(seed.get_span_context(), {"why": "203.0.113.77"})]
    ) as span:
        span.set_attribute(
            sc.GEN_AI_INPUT_MESSAGES,
            json.dumps(
                [
                    {
                        "role": "user",
                        "parts": [
                            {"type": "text", "content": "I am John Smith from Berlin, jane@example.com"}
                        ],
                    }
                ]
            ),
        )
        span.set_attribute(
            sc.GEN_AI_OUTPUT_MESSAGES, "Thanks, John Smith: the card 4111 1111 1111 1111 is saved."
        )
        span.set_attribute("http.client_ip", "203.0.113.77")
        span.set_attribute("note", "John Smith called")  # not a content attribute: NER leaves it alone
        span.add_event("exception", {"exception.message": "callback +1-555-123-4567 failed"})
        span.set_status(Status(StatusCode.ERROR, "rejected jane@example.com"))
    request = encode_spans(exporter.get_finished_spans())
    # A value nested in an array and a key-value list, as other SDKs send them.
    chat = next(
        s
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
        if s.name.startswith("chat")
    )
    nested = KeyValueList(values=[KeyValue(key="contact", value=AnyValue(string_value="jane@example.com"))])
    chat.attributes.append(
        KeyValue(key="extra", value=AnyValue(array_value=ArrayValue(values=[AnyValue(kvlist_value=nested)])))
    )
    return request


def _chat(request: ExportTraceServiceRequest):
    return next(
        s
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
        if s.name.startswith("chat")
    )


def _attrs(span) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in span.attributes}


@pytest.fixture(scope="module")
def scrubber() -> ServerScrubber:
    s = ServerScrubber(ner_enabled=True)
    s.warm_up()
    return s


def test_fast_pass_scrubs_every_string_value_in_place(scrubber: ServerScrubber) -> None:
    request = _request()
    replaced = scrubber.fast_pass(request).replaced
    wire = request.SerializeToString()
    for raw in ("jane@example.com", "4111 1111 1111 1111", "+1-555-123-4567", "203.0.113.77"):
        assert raw.encode() not in wire
    chat = _chat(request)
    email = collector_placeholder(scrubber.placeholder_key, chat.trace_id.hex(), "EMAIL_ADDRESS", RAW[0])
    assert chat.status.message == f"rejected {email}"
    assert replaced == 8  # resource, input, output card, ip attr, event phone, link ip, nested e-mail, status
    counts = decode_findings(_attrs(chat)[sc.VEIL_COLLECTOR_PII_FINDINGS])
    assert counts[("EMAIL_ADDRESS", "pattern", "input")] == 1
    assert counts[("CREDIT_CARD", "pattern", "output")] == 1
    assert counts[("IP_ADDRESS", "pattern", "attribute")] == 2
    assert "John Smith" in _attrs(chat)[sc.GEN_AI_OUTPUT_MESSAGES]  # names are the NER pass's job


def test_fast_pass_attributes_findings_to_their_span_and_trace() -> None:
    """Resource and scope findings go to the first span of that resource or scope, span findings to their
    own span; placeholders use that span's trace id; own findings attributes are not scrubbed."""
    request = ExportTraceServiceRequest()
    spans = []
    for r in range(2):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.append(
            KeyValue(key="owner", value=AnyValue(string_value=f"ops{r}@example.com"))
        )
        for s in range(2):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.attributes.append(
                KeyValue(key="contact", value=AnyValue(string_value=f"scope{r}{s}@example.com"))
            )
            for k in range(2):
                span = scope_spans.spans.add(trace_id=bytes([r, s, k]) * 5 + b"x", span_id=bytes([k]) * 8)
                span.attributes.extend(
                    [
                        KeyValue(key="n", value=AnyValue(int_value=7)),
                        KeyValue(key="ip", value=AnyValue(string_value=f"203.0.113.{10 * r + 2 * s + k}")),
                        KeyValue(
                            key=sc.VEIL_PII_FINDINGS, value=AnyValue(string_value='["jane@example.com"]')
                        ),
                    ]
                )
                spans.append(span)
    scrubber = ServerScrubber(ner_enabled=False)
    assert scrubber.fast_pass(request).replaced == 2 + 4 + 8
    key = scrubber.placeholder_key
    for r, resource_spans in enumerate(request.resource_spans):
        first = resource_spans.scope_spans[0].spans[0]
        owner = resource_spans.resource.attributes[0].value.string_value
        ops = f"ops{r}@example.com"
        assert owner == collector_placeholder(key, first.trace_id.hex(), "EMAIL_ADDRESS", ops)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            scope_first = scope_spans.spans[0]
            contact = scope_spans.scope.attributes[0].value.string_value
            assert contact == collector_placeholder(
                key, scope_first.trace_id.hex(), "EMAIL_ADDRESS", f"scope{r}{s}@example.com"
            )
            for k, span in enumerate(scope_spans.spans):
                attrs = _attrs(span)
                assert attrs[sc.VEIL_PII_FINDINGS] == '["jane@example.com"]'
                assert attrs["ip"] == collector_placeholder(
                    key, span.trace_id.hex(), "IP_ADDRESS", f"203.0.113.{10 * r + 2 * s + k}"
                )
                counts = decode_findings(attrs[sc.VEIL_COLLECTOR_PII_FINDINGS])
                emails = (s == 0 and k == 0) + (k == 0)  # the resource's, then the scope's first span
                assert counts == Counter(
                    {("IP_ADDRESS", "pattern", "attribute"): 1}
                    | ({("EMAIL_ADDRESS", "pattern", "attribute"): emails} if emails else {})
                )


def test_ner_pass_scrubs_content_attributes_and_appends_findings(scrubber: ServerScrubber) -> None:
    request = _request()
    scrubber.fast_pass(request)
    assert scrubber.ner_pass(request).replaced >= 3
    chat = _chat(request)
    attrs = _attrs(chat)
    content = attrs[sc.GEN_AI_INPUT_MESSAGES] + attrs[sc.GEN_AI_OUTPUT_MESSAGES]
    assert "John Smith" not in content and "Berlin" not in content
    person = collector_placeholder(scrubber.placeholder_key, chat.trace_id.hex(), "PERSON", "John Smith")
    assert person in attrs[sc.GEN_AI_INPUT_MESSAGES] and person in attrs[sc.GEN_AI_OUTPUT_MESSAGES]
    assert attrs["note"] == "John Smith called"
    counts = decode_findings(attrs[sc.VEIL_COLLECTOR_PII_FINDINGS])
    assert counts[("PERSON", "ner", "input")] == 1 and counts[("PERSON", "ner", "output")] == 1
    assert counts[("EMAIL_ADDRESS", "pattern", "input")] == 1  # the fast pass's findings are kept
    assert [kv.key for kv in chat.attributes].count(sc.VEIL_COLLECTOR_PII_FINDINGS) == 1


def test_ner_pass_is_a_no_op_when_disabled() -> None:
    request = _request()
    before = request.SerializeToString()
    assert ServerScrubber(ner_enabled=False).ner_pass(request).replaced == 0
    assert request.SerializeToString() == before


def test_missing_spacy_model_fails_at_construction() -> None:
    with pytest.raises(NerUnavailableError, match="never downloads"):
        ServerScrubber(ner_enabled=True, spacy_model="en_core_web_nonexistent_model")


def test_from_settings_reads_the_collector_settings(tmp_path) -> None:
    from veil_collector.config import Settings

    assert (
        ServerScrubber.from_settings(Settings(pii_ner_enabled=False, data_dir=tmp_path)).ner_enabled is False
    )


def test_pii_findings_rows_mark_sdk_and_server_sources(store) -> None:
    attributes = {
        sc.VEIL_PII_SCRUBBED: "true",
        sc.VEIL_PII_FINDINGS: json.dumps(
            [{"entity_type": "EMAIL_ADDRESS", "count": 2, "detector": "pattern", "location": "input"}]
        ),
        sc.VEIL_COLLECTOR_PII_FINDINGS: json.dumps(
            [
                {"entity_type": "PERSON", "count": 1, "detector": "ner", "location": "output"},
                {"entity_type": "bogus", "count": "x"},  # malformed entries off the wire are skipped
            ]
        ),
    }
    when = datetime.now(timezone.utc)  # inside the table TTL, or ClickHouse may drop the part
    rows = pii_findings_for_span(
        project_id="p1", timestamp=when, trace_id="ab" * 16, span_id="cd" * 8, service_name="svc",
        attributes=attributes, veil_batch=7,
    )  # fmt: skip
    assert [
        (r.source, r.entity_type, r.count, r.detector, r.location, r.sdk_scrubbed, r.sdk_missed) for r in rows
    ] == [
        ("sdk", "EMAIL_ADDRESS", 2, "pattern", "input", True, False),
        ("server", "PERSON", 1, "ner", "output", True, True),
    ]
    store.insert(PiiFinding.TABLE, [r.as_row() for r in rows], PiiFinding.COLUMNS)
    stored = store.query(
        "SELECT Source, EntityType, Count, SdkScrubbed, SdkMissed, VeilBatch FROM pii_findings "
        "ORDER BY Source"
    ).result_rows
    assert [tuple(r) for r in stored] == [
        ("sdk", "EMAIL_ADDRESS", 2, 1, 0, 7),
        ("server", "PERSON", 1, 1, 1, 7),
    ]


def test_span_without_findings_gives_no_rows() -> None:
    rows = pii_findings_for_span(
        project_id="p", timestamp=datetime.now(timezone.utc), trace_id="t", span_id="s", service_name="svc",
        attributes={"other": "x"},
    )  # fmt: skip
    assert rows == []


@pytest.mark.skipif(not _seeds.hyperscan_available(), reason="hyperscan is not installed")
def test_warm_up_compiles_the_pattern_scan_before_the_first_request() -> None:
    # A fresh process: the seed database compiles once per process, on first use.
    code = (
        "from veil.pii import _seeds\n"
        "from veil_collector.scrub import ServerScrubber\n"
        "scrubber = ServerScrubber(ner_enabled=False)\n"
        "assert _seeds._compiled is None\n"
        "scrubber.warm_up()\n"
        "assert _seeds._compiled is not None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
