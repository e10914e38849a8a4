"""The drain on real embedded ClickHouse: deduplicated replays, crash verification, outages, listeners."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient
from ingest_spans import genai_request

from veil_collector.app import create_app
from veil_collector.auth import create_project
from veil_collector.pipeline import INTENT_FILE, Pipeline
from veil_collector.records import StoredBatch
from veil_collector.spool import Spool
from veil_collector.spool.spool import CHECKPOINT
from veil_collector.store.flatten import FlatBatch, Flattener
from veil_collector.store.native import RequestEncoder

MIB = 1024 * 1024
DEDUP = {"insert_deduplicate": 1, "deduplicate_blocks_in_dependent_materialized_views": 1}


def run_pipeline(spool_dir: Path, store, bodies: list[bytes], **kwargs) -> tuple[Spool, Pipeline]:
    spool = Spool(spool_dir, max_bytes=64 * MIB)
    spool.start()
    pipeline = Pipeline(
        spool, store, encoder=RequestEncoder.for_store(store, Flattener()), interval_s=0.05, **kwargs
    )
    pipeline.start()
    for body in bodies:
        spool.append("p", body).result(timeout=10)
    assert pipeline.wait_drained(20)
    return spool, pipeline


def stop(spool: Spool, pipeline: Pipeline) -> None:
    spool.close()
    pipeline.stop()


def span_counts(store) -> tuple[int, int]:
    return store.query("SELECT count(), uniqExact(TraceId, SpanId) FROM otel_traces").result_rows[0]


def rewind_checkpoint(spool_dir: Path) -> None:
    """What the disk looks like when the process died after the inserts but before the checkpoint."""
    intent = json.loads((spool_dir / INTENT_FILE).read_bytes())
    (spool_dir / CHECKPOINT).write_text(json.dumps({"drained_upto": intent["a"]}))


def test_the_same_batch_inserted_twice_is_stored_once(store):
    flat = FlatBatch()
    Flattener().flatten([("p", genai_request(50))], batch=7, out=flat)

    for _ in range(2):
        for table, columns, rows in flat.tables():
            store.insert(
                table, rows, columns, settings={"insert_deduplication_token": f"veil:7:8:{table}", **DEDUP}
            )

    assert span_counts(store) == (50, 50)
    assert store.query("SELECT count() FROM llm_calls").result_rows == [(50,)]
    assert store.query("SELECT count() FROM otel_traces_trace_id_ts").result_rows == [(50,)]


def test_a_batch_replayed_after_a_crash_is_not_duplicated(store, tmp_path):
    bodies = [genai_request(20).SerializeToString() for _ in range(3)]
    stop(*run_pipeline(tmp_path, store, bodies))
    rewind_checkpoint(tmp_path)

    spool, pipeline = run_pipeline(tmp_path, store, [])
    stop(spool, pipeline)

    assert span_counts(store) == (60, 60)
    assert store.query("SELECT count() FROM llm_calls").result_rows == [(60,)]


def test_batches_prepared_ahead_are_stored_once_each_in_seq_order(store, tmp_path):
    # Small batches: the prepare thread works ahead of the store thread.
    bodies = [genai_request(20).SerializeToString() for _ in range(8)]
    spool, pipeline = run_pipeline(tmp_path, store, bodies, batch_spans=20)
    stop(spool, pipeline)

    assert span_counts(store) == (160, 160)
    batches = store.query("SELECT VeilBatch, count() FROM otel_traces GROUP BY VeilBatch ORDER BY VeilBatch")
    starts = [batch for batch, _ in batches.result_rows]
    # Each batch starts at its first record's seq and holds 20 spans per record up to the next batch.
    assert [count for _, count in batches.result_rows] == [
        20 * (end - start) for start, end in zip(starts, [*starts[1:], starts[0] + 8], strict=True)
    ]
    assert spool.drained_upto == starts[0] + 8


def test_rows_lost_behind_a_recorded_token_are_reinserted(store, tmp_path):
    # ClickHouse records a block's token before committing its part; a crash in between leaves the token
    # without the rows, and a plain replay with the same token would be dropped as a duplicate.
    bodies = [genai_request(10).SerializeToString()]
    stop(*run_pipeline(tmp_path, store, bodies))
    intent = json.loads((tmp_path / INTENT_FILE).read_bytes())
    flat = FlatBatch()
    Flattener().flatten([("p", genai_request(10))], batch=intent["a"], out=flat)
    store.command("DELETE FROM otel_traces WHERE VeilBatch = {b:UInt64}", {"b": intent["a"]})
    token = f"veil:{intent['a']}:{intent['b']}:otel_traces"
    store.insert(
        "otel_traces", flat.traces, flat.tables()[0][1], {"insert_deduplication_token": token, **DEDUP}
    )
    assert span_counts(store) == (0, 0)  # the token is spent: the same-token replay was dropped
    rewind_checkpoint(tmp_path)

    spool, pipeline = run_pipeline(tmp_path, store, [])
    stop(spool, pipeline)

    assert span_counts(store) == (10, 10)
    assert store.query("SELECT count() FROM llm_calls").result_rows == [(10,)]


def test_clickhouse_outage_is_absorbed_by_the_spool_and_drained_after(make_settings, store):
    _, key = create_project(store, "outage")
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
    settings = make_settings(spool_max_bytes=MIB, spool_segment_bytes=256 * 1024)
    with TestClient(create_app(settings)) as client:
        pipeline = client.app.state.pipeline
        store.command("RENAME TABLE otel_traces TO otel_traces_away")
        accepted = 0
        throttled = None
        for _ in range(40):
            response = client.post(
                "/v1/traces", content=genai_request(100).SerializeToString(), headers=headers
            )
            if response.status_code == 503:
                throttled = response
                break
            assert response.status_code == 200
            accepted += 100
        deadline = time.monotonic() + 10
        while pipeline.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        not_ready = client.get("/readyz")

        store.command("RENAME TABLE otel_traces_away TO otel_traces")
        assert pipeline.wait_drained(60)
        ready = client.get("/readyz")

    assert throttled is not None and throttled.headers["retry-after"].isdigit()
    assert accepted > 0
    assert not_ready.status_code == 503
    assert any("insert failed" in reason for reason in not_ready.json()["reasons"])
    assert ready.status_code == 200, ready.json()
    assert span_counts(store) == (accepted, accepted)


def test_listeners_get_each_stored_batch_and_a_blocked_one_holds_the_drain(store, tmp_path):
    release = threading.Event()
    received: list[StoredBatch] = []

    def slow_listener(batch: StoredBatch) -> None:
        release.wait(20)
        received.append(batch)

    def failing_listener(batch: StoredBatch) -> None:
        raise RuntimeError("a broken stage must not stop the drain")

    spool = Spool(tmp_path, max_bytes=64 * MIB)
    spool.start()
    pipeline = Pipeline(
        spool, store, encoder=RequestEncoder.for_store(store, Flattener()), batch_spans=1, interval_s=0.01
    )
    pipeline.add_listener(failing_listener)
    pipeline.add_listener(slow_listener)
    pipeline.start()
    blocked = False
    for _ in range(20):
        seq = spool.append("p", genai_request(1).SerializeToString()).result(timeout=10)
        deadline = time.monotonic() + 3
        while not blocked and spool.drained_upto <= seq:
            time.sleep(0.01)  # one batch per request while the drain keeps up
            blocked = time.monotonic() > deadline
    time.sleep(0.3)
    held = spool.depth_records

    release.set()
    assert pipeline.wait_drained(20)
    deadline = time.monotonic() + 10
    while sum(len(b.calls) for b in received) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop(spool, pipeline)

    # At most 6 single-request batches get past a blocked listener: one in it, four queued, one waiting.
    assert held >= 14
    calls = [call for batch in received for call in batch.calls]
    assert len(calls) == 20
    assert calls[0].project_id == "p"
    assert calls[0].input_text.startswith("You are a support assistant")
    assert calls[0].output_text.startswith("I am sorry")


def test_stored_calls_reach_the_classifier_and_alert_stages(make_settings, store):
    settings = make_settings(classifiers_enabled=True, alerts_enabled=True)
    with TestClient(create_app(settings)) as client:
        _, key = create_project(store, "stages")
        headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
        assert (
            client.post(
                "/v1/traces", content=genai_request(2).SerializeToString(), headers=headers
            ).status_code
            == 200
        )
        assert client.app.state.pipeline.wait_drained(20)
        assert client.app.state.classifier.force_flush(60)
        assert client.app.state.alert_engine is not None

    rows = store.query("SELECT count(DISTINCT SpanId), countIf(Evaluator = 'toxicity') > 0 FROM evaluations")
    assert rows.result_rows == [(2, True)]


def test_a_failing_stage_stops_the_drain_visibly_and_keeps_the_data(store, tmp_path):
    def broken_findings(**span: object) -> list:
        raise RuntimeError("scrub rows exploded")

    spool = Spool(tmp_path, max_bytes=64 * MIB)
    spool.start()
    encoder = RequestEncoder.for_store(store, Flattener(pii_findings=broken_findings))
    pipeline = Pipeline(spool, store, encoder=encoder, interval_s=0.01)
    pipeline.start()
    spool.append("p", genai_request(3).SerializeToString()).result(timeout=10)

    assert not pipeline.wait_drained(5)
    stop(spool, pipeline)
    assert "scrub rows exploded" in (pipeline.last_error or "")
    assert spool.depth_records == 1
    assert span_counts(store) == (0, 0)
