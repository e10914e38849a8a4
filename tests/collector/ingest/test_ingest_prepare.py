"""What the receiver stores of a request: the body as it came when nothing changed it, else re-serialized."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest
from ingest_spans import OTLP_SPEC_JSON_EXAMPLE, genai_request, genai_span, kv, request_of
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from veil.pii import ScrubConfig
from veil_collector.receiver import Encoding, RequestPreparer, prepare
from veil_collector.scrub import ServerScrubber

LIMIT = 64 << 20


@pytest.fixture(scope="module")
def scrubber() -> ServerScrubber:
    return ServerScrubber(ner_enabled=False)


def test_a_request_nothing_changes_is_stored_as_it_came(scrubber):
    raw = genai_request(20).SerializeToString()

    prepared = prepare(raw, None, Encoding.PROTOBUF, LIMIT, scrubber)

    assert prepared.body is raw  # not re-serialized
    assert prepared.result.accepted == 20 and not prepared.result.rejected


def test_a_gzip_request_nothing_changes_is_stored_decompressed(scrubber):
    raw = genai_request(5).SerializeToString()

    prepared = prepare(gzip.compress(raw), "gzip", Encoding.PROTOBUF, LIMIT, scrubber)

    assert prepared.body == raw


def test_a_scrubbed_request_is_stored_re_serialized_without_the_pii(scrubber):
    span = genai_span(bytes(range(1, 17)), bytes(range(1, 9)), start_ns=1)
    span.attributes.append(kv("user.email", "jane@example.com"))
    raw = request_of([span]).SerializeToString()

    prepared = prepare(raw, None, Encoding.PROTOBUF, LIMIT, scrubber)

    assert b"jane@example.com" in raw and b"jane@example.com" not in prepared.body
    stored = ExportTraceServiceRequest.FromString(prepared.body).resource_spans[0].scope_spans[0].spans[0]
    assert {a.key for a in stored.attributes} >= {"user.email", "veil.collector.pii.findings"}


def test_a_request_with_a_dropped_span_is_stored_without_it(scrubber):
    request = genai_request(3)
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = bytes(16)  # invalid: all zero
    raw = request.SerializeToString()

    prepared = prepare(raw, None, Encoding.PROTOBUF, LIMIT, scrubber)

    assert (prepared.result.accepted, prepared.result.rejected) == (2, 1)
    assert (
        len(ExportTraceServiceRequest.FromString(prepared.body).resource_spans[0].scope_spans[0].spans) == 2
    )


def test_a_json_request_is_stored_as_protobuf(scrubber):
    raw = json.dumps(OTLP_SPEC_JSON_EXAMPLE).encode()

    prepared = prepare(raw, None, Encoding.JSON, LIMIT, scrubber)

    stored = ExportTraceServiceRequest.FromString(prepared.body)
    span = stored.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c" and span.name == "I'm a server span"


def test_a_string_cut_to_the_length_limit_counts_as_a_change(scrubber):
    """A string over the scrubber's limit is cut without any entity in it: the request changed, and the
    uncut string (never scanned past the limit) must not reach the spool."""
    limit = ScrubConfig().max_text_chars
    span = genai_span(bytes(range(1, 17)), bytes(range(1, 9)), start_ns=1)
    span.attributes.append(kv("long", "a" * (limit + 1000)))
    request = request_of([span])

    outcome = scrubber.fast_pass(request)
    prepared = prepare(request_of([span]).SerializeToString(), None, Encoding.PROTOBUF, LIMIT, scrubber)

    assert (outcome.replaced, outcome.changed) == (0, 1)
    stored = ExportTraceServiceRequest.FromString(prepared.body).resource_spans[0].scope_spans[0].spans[0]
    cut = next(a for a in stored.attributes if a.key == "long").value.string_value
    assert cut == "a" * limit + "[TRUNCATED]"


def test_a_worker_process_stores_what_the_server_process_stores(scrubber):
    clean = genai_request(4).SerializeToString()
    span = genai_span(bytes(range(1, 17)), bytes(range(1, 9)), start_ns=1)
    span.attributes.append(kv("user.email", "jane@example.com"))
    dirty = request_of([span]).SerializeToString()
    preparer = RequestPreparer(scrubber, processes=1)
    try:
        in_worker = [
            asyncio.run(preparer.prepare(raw, None, Encoding.PROTOBUF, LIMIT, "p")) for raw in (clean, dirty)
        ]
    finally:
        preparer.close()

    assert in_worker[0].body is clean  # the worker did not send the unchanged body back
    assert in_worker[1].body != dirty and b"jane@example.com" not in in_worker[1].body
    assert [p.result for p in in_worker] == [prepare(raw, None, Encoding.PROTOBUF, LIMIT, scrubber).result
                                             for raw in (clean, dirty)]  # fmt: skip
