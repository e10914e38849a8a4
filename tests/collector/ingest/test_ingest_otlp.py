"""OTLP/HTTP conformance of ``POST /v1/traces`` against a running collector on embedded ClickHouse."""

from __future__ import annotations

import copy
import gzip
import json
import time

import pytest
from fastapi.testclient import TestClient
from google.rpc import status_pb2
from ingest_spans import OTLP_SPEC_JSON_EXAMPLE, genai_request, kv, request_of
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from veil_collector.app import create_app
from veil_collector.auth import create_project

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@pytest.fixture
def key(store) -> str:
    return create_project(store, "conformance")[1]


def post(client: TestClient, body: bytes, key: str | None, content_type: str = PROTOBUF, **headers: str):
    headers = {"Content-Type": content_type, **headers}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return client.post("/v1/traces", content=body, headers=headers)


def drained(client: TestClient) -> None:
    assert client.app.state.pipeline.wait_drained(20)


def status_message(response) -> str:
    if response.headers["content-type"].startswith(PROTOBUF):
        return status_pb2.Status.FromString(response.content).message
    return response.json()["message"]


def test_protobuf_request_is_stored_as_the_otel_exporter_writes_it(client, store, key):
    request = genai_request(3)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.events.add(time_unix_nano=span.start_time_unix_nano + 5, name="retry").attributes.append(
        kv("attempt", 2)
    )
    link = span.links.add(trace_id=bytes(range(16)), span_id=bytes(range(1, 9)))
    link.attributes.append(kv("ratio", 0.5))

    response = post(client, request.SerializeToString(), key)

    assert response.status_code == 200
    assert response.headers["content-type"] == PROTOBUF
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    drained(client)
    rows = store.query(
        "SELECT TraceId, SpanId, SpanKind, StatusCode, Duration, toUnixTimestamp64Nano(Timestamp), "
        "SpanAttributes['gen_ai.usage.input_tokens'], SpanAttributes['gen_ai.request.temperature'], "
        "SpanAttributes['veil.tags'], Events.Name, Events.Attributes, Links.TraceId, Links.Attributes "
        "FROM otel_traces WHERE SpanId = {s:String}",
        {"s": span.span_id.hex()},
    ).result_rows
    assert rows == [
        (
            span.trace_id.hex(),
            span.span_id.hex(),
            "Client",
            "Ok",
            850_000_000,
            span.start_time_unix_nano,
            "412",
            "0.2",
            '["bench","support"]',
            ["retry"],
            [{"attempt": "2"}],
            [bytes(range(16)).hex()],
            [{"ratio": "0.5"}],
        )
    ]
    calls = store.query(
        "SELECT count(), any(RequestModel), any(InputTokens), any(FinishReasons), any(Tags), "
        "any(CostUsd) > 0 FROM llm_calls"
    ).result_rows
    assert calls == [(3, "gpt-4o-mini", 412, ["stop"], ["bench", "support"], True)]


def recent(document: dict) -> tuple[dict, int]:
    """The document with its span moved to now: rows of 2018 would be dropped by the tables' TTL."""
    document = copy.deepcopy(document)
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    start = time.time_ns()
    span["startTimeUnixNano"] = str(start)
    span["endTimeUnixNano"] = str(start + 1_000_000_000)
    return document, start


def test_the_otlp_specification_json_example(client, store, key):
    document, start = recent(OTLP_SPEC_JSON_EXAMPLE)
    response = post(client, json.dumps(document).encode(), key, JSON)

    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert response.json() == {}
    drained(client)
    rows = store.query(
        "SELECT TraceId, SpanId, ParentSpanId, SpanKind, ServiceName, ScopeName, ScopeVersion, Duration, "
        "toUnixTimestamp64Nano(Timestamp), SpanAttributes FROM otel_traces"
    ).result_rows
    assert rows == [
        (
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
            "eee19b7ec3c1b173",
            "Server",
            "my.service",
            "my.library",
            "1.0.0",
            1_000_000_000,
            start,
            {"my.span.attr": "some value"},
        )
    ]


def test_json_accepts_int64_as_numbers_and_ignores_unknown_fields(client, store, key):
    document, start = recent(OTLP_SPEC_JSON_EXAMPLE)
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["startTimeUnixNano"] = start  # a number, not a string
    span["someFutureField"] = {"x": 1}
    span["attributes"].append({"key": "n", "value": {"intValue": "7"}})

    assert post(client, json.dumps(document).encode(), key, JSON).status_code == 200
    drained(client)
    assert store.query("SELECT SpanAttributes['n'] FROM otel_traces").result_rows == [("7",)]


def test_gzip_body(client, store, key):
    body = gzip.compress(genai_request(5).SerializeToString())

    response = post(client, body, key, **{"Content-Encoding": "gzip"})

    assert response.status_code == 200
    drained(client)
    assert store.query("SELECT count() FROM otel_traces").result_rows == [(5,)]


@pytest.mark.parametrize(
    ("content_type", "body", "fragment"),
    [
        (PROTOBUF, b"\xff\xff\xff\xff not protobuf", "invalid protobuf"),
        (JSON, b"{not json", "invalid JSON"),
        (
            JSON,
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"endTimeUnixNano": "soon"}]}]}]}',
            "invalid OTLP",
        ),
        (JSON, b'["resourceSpans"]', "must be an object"),
    ],
)
def test_malformed_bodies_get_400_with_a_status_in_the_request_encoding(
    client, key, content_type, body, fragment
):
    response = post(client, body, key, content_type)

    assert response.status_code == 400
    assert response.headers["content-type"] == content_type
    assert fragment in status_message(response)


def test_corrupt_gzip_is_400(client, key):
    response = post(client, b"\x1f\x8b\x08\x00garbage", key, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip" in status_message(response)


def test_size_limit_is_checked_while_decompressing_a_gzip_bomb(make_settings, store, key):
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 1024 * 1024
    with TestClient(create_app(make_settings(max_request_bytes=1024 * 1024))) as client:
        response = post(client, bomb, key, **{"Content-Encoding": "gzip"})
        plain = post(client, b"\0" * (2 * 1024 * 1024), key)

    assert response.status_code == 413
    assert "inflates beyond the limit" in status_message(response)
    assert plain.status_code == 413


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"Content-Type": "text/plain"}, "unsupported Content-Type"),
        ({"Content-Type": PROTOBUF, "Content-Encoding": "br"}, "unsupported Content-Encoding"),
    ],
)
def test_unsupported_media_is_415(client, key, headers, fragment):
    response = client.post("/v1/traces", content=b"x", headers={**headers, "Authorization": f"Bearer {key}"})
    assert response.status_code == 415
    assert fragment in status_message(response)


@pytest.mark.parametrize("authorization", [None, "Bearer veil_not-a-key", "Basic dXNlcjpwYXNz"])
def test_requests_without_a_valid_key_get_401(client, store, authorization):
    headers = {"Content-Type": PROTOBUF}
    if authorization:
        headers["Authorization"] = authorization
    response = client.post("/v1/traces", content=genai_request(1).SerializeToString(), headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert status_message(response)
    assert client.app.state.spool.depth_records == 0


def test_invalid_span_ids_are_rejected_individually(client, store, key):
    request = genai_request(3)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].trace_id = bytes(16)  # all-zero trace id
    spans.append(Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 3, name="short span id"))

    response = post(client, request.SerializeToString(), key)

    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 2
    assert "short span id" in partial.error_message
    drained(client)
    assert store.query("SELECT count() FROM otel_traces").result_rows == [(2,)]


def test_invalid_hex_in_json_is_a_partial_success_in_json(client, store, key):
    document, _ = recent(OTLP_SPEC_JSON_EXAMPLE)
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "spanId": "NOT-HEX-AT-ALL!!", "name": "bad"})

    response = post(client, json.dumps(document).encode(), key, JSON)

    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    drained(client)
    assert store.query("SELECT SpanName FROM otel_traces").result_rows == [("I'm a server span",)]


def test_empty_request_succeeds_without_spooling(client, key):
    response = post(client, b"", key)
    assert response.status_code == 200
    assert client.app.state.spool.depth_records == 0


def test_every_row_belongs_to_the_key_that_sent_it(client, store):
    project_a, key_a = create_project(store, "a")
    project_b, key_b = create_project(store, "b")
    forged = request_of(genai_request(2).resource_spans[0].scope_spans[0].spans)
    forged.resource_spans[0].resource.attributes.append(kv("veil.project.id", project_a))

    assert post(client, genai_request(3).SerializeToString(), key_a).status_code == 200
    assert post(client, forged.SerializeToString(), key_b).status_code == 200

    drained(client)
    for table in ("otel_traces", "llm_calls"):
        counts = store.query(f"SELECT ProjectId, count() FROM {table} GROUP BY ProjectId ORDER BY ProjectId")
        assert sorted(counts.result_rows) == sorted([(project_a, 3), (project_b, 2)])


def test_no_auth_serves_the_default_project(make_settings, store):
    with TestClient(create_app(make_settings(no_auth=True))) as client:
        assert post(client, genai_request(1).SerializeToString(), None).status_code == 200
        drained(client)
    assert store.query("SELECT ProjectId FROM otel_traces").result_rows == [("default",)]


def test_projects_api_requires_the_admin_token(make_settings, store):
    with TestClient(create_app(make_settings(admin_token="s3cret"))) as client:
        refused = client.post("/api/projects", json={"name": "x"}, headers={"Authorization": "Bearer nope"})
        created = client.post(
            "/api/projects", json={"name": "team"}, headers={"Authorization": "Bearer s3cret"}
        )
        ingest = post(client, genai_request(1).SerializeToString(), created.json()["api_key"])

    assert refused.status_code == 401
    assert created.status_code == 201
    assert ingest.status_code == 200


def test_metrics_count_received_and_rejected_spans(client, key):
    post(client, genai_request(2).SerializeToString(), key)
    post(client, b"junk", key)

    text = client.get("/metrics").text

    assert 'veil_spans_received_total{encoding="protobuf"}' in text
    assert 'veil_otlp_requests_rejected_total{reason="malformed"}' in text
    assert "veil_spool_depth_bytes" in text
    assert client.get("/healthz").json() == {"status": "ok"}


def test_worker_processes_prepare_requests_the_same_way(make_settings, store, key):
    with TestClient(create_app(make_settings(receiver_processes=1))) as client:
        accepted = post(client, genai_request(4).SerializeToString(), key)
        malformed = post(client, b"{oops", key, JSON)
        bomb = post(client, gzip.compress(b"\0" * (80 * 1024 * 1024)), key, **{"Content-Encoding": "gzip"})
        drained(client)

    assert accepted.status_code == 200
    assert malformed.status_code == 400 and "invalid JSON" in status_message(malformed)
    assert bomb.status_code == 413
    assert store.query("SELECT count() FROM otel_traces").result_rows == [(4,)]
