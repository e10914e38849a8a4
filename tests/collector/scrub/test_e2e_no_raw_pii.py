"""End to end: raw PII sent by a plain OpenTelemetry exporter (not the Veil SDK) never reaches ClickHouse,
and pattern-detectable PII never reaches the collector's disk (the spool) at all.

A real collector (``create_app`` served by uvicorn on a local port, embedded ClickHouse, NER on with the
installed spaCy model) receives spans from the stock ``OTLPSpanExporter`` over HTTP/protobuf.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode

from veil import semconv as sc
from veil_collector.app import create_app
from veil_collector.auth import create_project
from veil_collector.config import Settings

PATTERN_PII = (
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "+1-555-123-4567",
    "123-45-6789",
    "GB82 WEST 1234 5698 7654 32",
    "198.51.100.23",
    "sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3",
)
NAMES = ("John Smith",)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def collector(chdb_dsn: str, store: Any, tmp_path: Path) -> Iterator[tuple[str, Any, Path]]:
    settings = Settings(
        clickhouse_dsn=chdb_dsn,
        database=store.database,
        data_dir=tmp_path / "data",
        spool_dir=tmp_path / "spool",
        drain_interval_s=0.05,
        pii_ner_enabled=True,
    )
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # lifespan loads the spaCy model
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "collector did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app, tmp_path / "spool"
    finally:
        server.should_exit = True
        thread.join(30)


def _send(url: str, key: str) -> None:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "plain-otel", "owner": "jane.doe@example.com"})
    )
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {key}"})
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("plain")
    prompt = (
        "My name is John Smith. Email jane.doe@example.com, card 4111 1111 1111 1111, phone +1-555-123-4567, "
        "SSN 123-45-6789, IBAN GB82 WEST 1234 5698 7654 32, key sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3"
    )
    with tracer.start_as_current_span("seed") as seed:
        pass
    with tracer.start_as_current_span(
        "chat gpt-4o", links=[Link(seed.get_span_context(), {"ip": "198.51.100.23"})]
    ) as span:
        span.set_attribute(sc.GEN_AI_OPERATION_NAME, "chat")
        span.set_attribute(sc.GEN_AI_REQUEST_MODEL, "gpt-4o")
        span.set_attribute(
            sc.GEN_AI_INPUT_MESSAGES,
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}]),
        )
        span.set_attribute(
            sc.GEN_AI_OUTPUT_MESSAGES,
            json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Hello John Smith!"}]}]),
        )
        span.set_attribute("client.address", "198.51.100.23")
        span.add_event("exception", {"exception.message": "could not reach jane.doe@example.com"})
        span.set_status(Status(StatusCode.ERROR, "card 4111 1111 1111 1111 declined"))
    provider.shutdown()


@pytest.mark.timeout(240)
def test_plain_otel_exporter_pii_never_reaches_clickhouse_or_the_spool(collector, store) -> None:
    url, app, spool_dir = collector
    _, key = create_project(store, "e2e-pii")
    _send(url, key)
    assert app.state.pipeline.wait_drained(60)

    tables = [row[0] for row in store.query("SHOW TABLES").result_rows]
    stored = "\n".join(repr(store.query(f"SELECT * FROM `{table}`").result_rows) for table in tables)
    # The spans arrived, scrubbed by the collector.
    assert re.search(r"\[EMAIL_c[0-9a-f]{10}\]", stored) and re.search(r"\[PERSON_c[0-9a-f]{10}\]", stored)
    for raw in PATTERN_PII + NAMES:
        assert raw not in stored, f"{raw!r} reached ClickHouse"

    on_disk = b"".join(p.read_bytes() for p in spool_dir.rglob("*") if p.is_file())
    for raw in PATTERN_PII:
        assert raw.encode() not in on_disk, f"{raw!r} reached the spool"

    findings = store.query(
        "SELECT EntityType, Detector, Source, SdkScrubbed, SdkMissed FROM pii_findings"
    ).result_rows
    kinds = {(r[0], r[1]) for r in findings}
    assert {("EMAIL_ADDRESS", "pattern"), ("CREDIT_CARD", "pattern"), ("PERSON", "ner")} <= kinds
    assert all(r[2] == "server" and r[3] == 0 and r[4] == 1 for r in findings)
