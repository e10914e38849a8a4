"""Rows encoded per request (in the receiver's workers) store exactly what the flattened rows store."""

from __future__ import annotations

import importlib
import pickle
import time
from collections import Counter

from ingest_spans import genai_request, genai_span, kv, request_of

from veil.pii.findings import encode_findings
from veil_collector.pricing import PriceTable
from veil_collector.receiver import Encoding, prepare
from veil_collector.scrub import pii_findings_for_span
from veil_collector.store.flatten import FlatBatch, Flattener
from veil_collector.store.native import RequestEncoder

# The module, not the package attribute of the same name (the ``prepare`` function).
receiver_prepare = importlib.import_module("veil_collector.receiver.prepare")
TABLES = ("otel_traces", "otel_traces_trace_id_ts", "llm_calls", "pii_findings", "guard_decisions")


def varied_requests():
    """Requests of several sizes with PII findings, a guard event and an unknown model among them."""
    now = time.time_ns()  # inside the tables' TTL
    flagged = genai_span(bytes(range(1, 17)), bytes(range(1, 9)), start_ns=now)
    findings = encode_findings(Counter({("EMAIL", "pattern", "input"): 2}))
    flagged.attributes.append(kv("veil.pii.findings", findings))
    event = flagged.events.add(time_unix_nano=now + 1, name="veil.guard")
    event.attributes.extend([kv("veil.guard.check", "toxicity"), kv("veil.guard.decision", "block")])
    unknown = genai_span(bytes(range(2, 18)), bytes(range(2, 10)), start_ns=now)
    for attribute in unknown.attributes:
        if attribute.key.endswith("model"):
            attribute.value.string_value = "a-model-without-a-price"
    return [genai_request(300), request_of([flagged, unknown]), genai_request(1)]


def rows_of(store) -> dict[str, list[tuple]]:
    return {table: store.query(f"SELECT * FROM {table} ORDER BY tuple(*)").result_rows for table in TABLES}


def test_encoded_blocks_store_the_rows_that_the_flattened_insert_stores(new_store):
    flattener = Flattener(cost_usd=PriceTable.load().cost_usd, pii_findings=pii_findings_for_span)
    requests = varied_requests()
    flattened, encoded = new_store(), new_store()
    flat = FlatBatch()
    flattener.flatten([("p", request) for request in requests], batch=77, out=flat)
    for table, columns, rows in flat.tables():
        flattened.insert(table, rows, columns)
    # The copy a worker process gets: the encoder travels pickled.
    encoder = pickle.loads(pickle.dumps(RequestEncoder.for_store(encoded, flattener)))

    parts = [encoder.encode("p", request) for request in requests]
    for table in encoder.tables:
        blocks = b"".join(encoder.blocks(table, [part.tables[table] for part in parts], 77))
        encoded.insert_native(table, blocks, encoder.insert_columns(table))

    expected = rows_of(flattened)
    assert rows_of(encoded) == expected
    assert [len(expected[table]) for table in TABLES] == [303, 303, 303, 1, 1]
    assert encoded.query("SELECT countIf(CostUsd IS NULL) FROM llm_calls").result_rows == [(1,)]
    assert [len(part.calls) for part in parts] == [300, 2, 1]
    assert [finding.veil_batch for part in parts for finding in part.pii_findings] == [0]


def test_encoding_is_deterministic_and_calls_are_optional(store):
    request = varied_requests()[1]
    with_calls = RequestEncoder.for_store(store, Flattener(pii_findings=pii_findings_for_span))
    without = RequestEncoder.for_store(store, Flattener(pii_findings=pii_findings_for_span), calls=False)

    first, second, lean = (encoder.encode("p", request) for encoder in (with_calls, with_calls, without))

    assert first == second
    assert lean.tables == first.tables and not lean.calls and len(first.calls) == 2
    assert first.nbytes == sum(len(table.columns) for table in first.tables.values()) > 0


def test_a_request_whose_rows_fail_to_encode_is_still_accepted_for_the_drain_to_encode(
    new_store, caplog, monkeypatch
):
    """Fault injection: a findings reader that raises stands in for a flatten bug (none is known)."""

    def broken_findings(span):
        raise ValueError("a flatten bug")

    flattener = Flattener(cost_usd=PriceTable.load().cost_usd, pii_findings=broken_findings)
    encoder = RequestEncoder.for_store(new_store(), flattener)
    raw = genai_request(3).SerializeToString()
    monkeypatch.setattr(receiver_prepare, "_encode_failure_logged", False)

    with caplog.at_level("ERROR"):
        first = prepare(raw, None, Encoding.PROTOBUF, 1 << 20, None, "p", encoder)
        second = prepare(raw, None, Encoding.PROTOBUF, 1 << 20, None, "p", encoder)

    assert first.rows is None and second.rows is None  # the drain encodes these from the spool
    assert first.body == raw and first.result.accepted == 3
    failures = [record for record in caplog.records if "encoding a request's rows failed" in record.message]
    assert len(failures) == 1 and failures[0].exc_info is not None  # once per process, with the traceback
