"""Placeholders of the SDK and of the collector within one trace: the real SDK span scrubber, the real
collector passes, spans encoded by the OTel SDK's own OTLP encoder.

The SDK numbers a trace's values in the app's process; the collector tags what the SDK missed (or what a
plain OpenTelemetry service sent) without seeing every span of the trace first: spans arrive in any
order, in any receiver worker process, on any replica, before or after a restart. Whatever the order and
wherever they are scrubbed, a value keeps one placeholder throughout a trace and one placeholder never
stands for two values. Two ``ServerScrubber`` instances stand for two processes: they share nothing but
the key.
"""

from __future__ import annotations

import asyncio
import re
import stat
from pathlib import Path

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
from veil_collector.config import Settings
from veil_collector.receiver.codec import Encoding
from veil_collector.receiver.prepare import RequestPreparer, prepare
from veil_collector.scrub import ServerScrubber
from veil_collector.scrub.keys import KEY_FILE

KEY = b"0123456789abcdef" * 4
TAG = r"c[0-9a-f]{10}"


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
    collectors = [ServerScrubber(ner_enabled=False, placeholder_key=KEY) for _ in range(replicas)]
    from_gateway = encode_spans([gateway])
    from_app = encode_spans(default_span_scrubber(ner=False).scrub([app]))

    arrivals = [(collectors[0], from_gateway), (collectors[-1], from_app)]
    for collector, request in arrivals if order == "collector first" else arrivals[::-1]:
        collector.fast_pass(request)

    bob, alice = _text(from_gateway), _text(from_app)
    assert set(_placeholders(bob)).isdisjoint(_placeholders(alice))
    assert alice == "I am [EMAIL_1]"  # the SDK's numbering, untouched by the collector
    assert re.fullmatch(rf"forwarded for \[EMAIL_{TAG}\]", bob)


@pytest.mark.timeout(120)
def test_ner_placeholders_of_the_collector_and_the_sdk_never_collide() -> None:
    gateway, app = _gateway_and_app_spans("Forwarded for John Smith.", "My name is Maria Garcia.")
    collector = ServerScrubber(ner_enabled=True)
    from_gateway = encode_spans([gateway])
    collector.fast_pass(from_gateway)
    assert collector.ner_pass(from_gateway).replaced == 1
    # The SDK with NER on numbered Maria Garcia [PERSON_1] in the app's process; the span arrives later.
    from_app = encode_spans(default_span_scrubber(ner=True).scrub([app]))
    collector.fast_pass(from_app)
    assert collector.ner_pass(from_app).replaced == 0

    assert re.fullmatch(rf"Forwarded for \[PERSON_{TAG}\]\.", _text(from_gateway))
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


def test_collector_placeholders_agree_across_processes_within_a_trace() -> None:
    # One trace's spans in three export batches, scrubbed by two receiver workers (or replicas) that share
    # nothing but the key; another trace on the first.
    workers = [ServerScrubber(ner_enabled=False, placeholder_key=KEY) for _ in range(2)]
    trace, other_trace = bytes(range(16)), bytes(range(1, 17))
    first = _request(trace, "mail bob@example.org", "call 555-123-4567")
    later = _request(trace, "cc Bob@Example.org and eve@example.net", "[EMAIL_1] called 555 123 4567")
    again = _request(trace, "eve@example.net wrote to bob@example.org")
    other = _request(other_trace, "mail bob@example.org")
    for worker, request in zip((*workers, *workers), (first, later, again, other), strict=True):
        worker.fast_pass(request)

    [[bob], [phone]] = [REPLACEMENT.findall(text) for text in _texts(first)]
    [eve] = set(REPLACEMENT.findall(_texts(later)[0])) - {bob}
    assert re.fullmatch(rf"\[EMAIL_{TAG}\]", bob) and re.fullmatch(rf"\[PHONE_{TAG}\]", phone)
    # The same values (e-mail case and phone punctuation normalized) keep their placeholders in the other
    # process; a new value gets another; the SDK's [EMAIL_1] stays what it is.
    assert _texts(later) == [f"cc {bob} and {eve}", f"[EMAIL_1] called {phone}"]
    assert _texts(again) == [f"{eve} wrote to {bob}"]
    [other_bob] = REPLACEMENT.findall(_texts(other)[0])
    assert other_bob not in (bob, eve)  # another trace, another tag


def test_collector_placeholders_differ_under_another_key() -> None:
    texts = ("mail bob@example.org", "call 555-123-4567")
    ours, theirs = _request(bytes(range(16)), *texts), _request(bytes(range(16)), *texts)
    ServerScrubber(ner_enabled=False, placeholder_key=KEY).fast_pass(ours)
    ServerScrubber(ner_enabled=False, placeholder_key=b"another key, not ours").fast_pass(theirs)
    for mine, other in zip(_texts(ours), _texts(theirs), strict=True):
        assert REPLACEMENT.search(mine) and REPLACEMENT.search(other) and mine != other


def test_receiver_worker_processes_tag_with_the_server_key() -> None:
    scrubber = ServerScrubber(ner_enabled=False, placeholder_key=KEY)
    raw = _request(bytes(range(16)), "mail bob@example.org").SerializeToString()
    in_process = prepare(raw, None, Encoding.PROTOBUF, 1 << 20, scrubber).body
    preparer = RequestPreparer(scrubber, processes=1)
    try:
        in_worker = asyncio.run(preparer.prepare(raw, None, Encoding.PROTOBUF, 1 << 20, "p")).body
    finally:
        preparer.close()
    assert in_worker == in_process != raw


def _scrubbed_by(settings: Settings, text: str = "mail bob@example.org") -> str:
    """``text`` in a span as a collector built from ``settings`` scrubs it (a fresh start each time)."""
    request = _request(bytes(range(16)), text)
    ServerScrubber.from_settings(settings).fast_pass(request)
    return _texts(request)[0]


def test_placeholder_key_is_generated_once_in_data_dir_and_kept_across_restarts(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", pii_ner_enabled=False)
    key_file = tmp_path / "data" / KEY_FILE
    first = _scrubbed_by(settings)
    key, mode = key_file.read_bytes(), stat.S_IMODE(key_file.stat().st_mode)
    restarted = _scrubbed_by(settings)

    assert mode == 0o600
    assert len(key.strip()) == 64 and key_file.read_bytes() == key  # reused, not rewritten
    assert restarted == first
    assert [p.name for p in key_file.parent.iterdir()] == [KEY_FILE]  # no temporary file left behind
    # The file's key is the key: a collector given it as the setting tags alike (how replicas share one).
    assert (
        _scrubbed_by(Settings(data_dir=tmp_path / "other", pii_placeholder_key=key.strip().decode())) == first
    )
    # A fresh data_dir without the setting gets a key of its own.
    assert _scrubbed_by(Settings(data_dir=tmp_path / "fresh", pii_ner_enabled=False)) != first


def test_placeholder_key_setting_overrides_the_key_file(tmp_path: Path) -> None:
    from_file = _scrubbed_by(Settings(data_dir=tmp_path, pii_ner_enabled=False))
    configured = Settings(data_dir=tmp_path, pii_ner_enabled=False, pii_placeholder_key=KEY.decode())
    expected = _request(bytes(range(16)), "mail bob@example.org")
    ServerScrubber(ner_enabled=False, placeholder_key=KEY).fast_pass(expected)

    assert _scrubbed_by(configured) == _texts(expected)[0] != from_file


def test_a_key_file_without_a_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("\n")
    with pytest.raises(ValueError, match="holds no PII placeholder key"):
        ServerScrubber.from_settings(Settings(data_dir=tmp_path, pii_ner_enabled=False))


@pytest.mark.timeout(120)
def test_collector_ner_placeholders_are_consistent_within_a_trace_across_processes() -> None:
    workers = [ServerScrubber(ner_enabled=True, placeholder_key=KEY) for _ in range(2)]
    trace = bytes(range(16))
    first = _request(trace, "I am John Smith.")
    later = _request(trace, "Thanks, John Smith. Maria Garcia says hello.")
    for worker, request in zip(workers, (first, later), strict=True):
        worker.fast_pass(request)
        worker.ner_pass(request)

    [[john]] = [REPLACEMENT.findall(text) for text in _texts(first)]
    [maria] = set(REPLACEMENT.findall(_texts(later)[0])) - {john}
    assert re.fullmatch(rf"\[PERSON_{TAG}\]", john)
    assert _texts(first) == [f"I am {john}."]
    assert _texts(later) == [f"Thanks, {john}. {maria} says hello."]


@pytest.mark.timeout(120)
def test_sdk_and_earlier_collector_placeholders_pass_through_the_collector_untouched() -> None:
    collector = ServerScrubber(ner_enabled=True, placeholder_key=KEY)
    # What the collector wrote itself: tags of either kind of pass, in another request of the trace.
    written = _request(bytes(range(16)), "I am John Smith, call 555-123-4567 or mail bob@example.org")
    collector.fast_pass(written)
    collector.ner_pass(written)
    texts = (
        "[PERSON_1] met [PERSON_2] in [LOCATION_1] and mailed [EMAIL_1] from [IP_3].",
        '[{"role": "user", "content": "[CREDIT_CARD_1] of [PERSON_c1], [PHONE:0123456789abcdef]"}]',
        "[EMAIL_c2] called [PHONE_12] about [NRP_1] friends",  # numbered by collectors before tags
        *_texts(written),
        # Tags of digits only, or that look like other entities: they continue the label (no boundary).
        "[PHONE_c5551234567] [SSN_c1234567890] [PERSON_c4111111111] [IBAN_cde89370400] [EMAIL_cbc1234abcd]",
    )
    assert len(REPLACEMENT.findall(texts[3])) == 3
    request = _request(bytes(range(16)), *texts)
    before = request.SerializeToString()

    assert collector.fast_pass(request).replaced == 0
    assert collector.ner_pass(request).replaced == 0
    assert request.SerializeToString() == before  # no text changed, no findings attribute added
