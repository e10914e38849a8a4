"""Fixtures for the SDK tests: a real OTLP/HTTP receiver, global-state reset, and the internal-error check.

The receiver is a real HTTP server on 127.0.0.1 that decodes `ExportTraceServiceRequest` protobuf (gzip or
not) with `opentelemetry-proto`, exactly what a collector receives; nothing about the export path is faked.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

import veil
from veil import _guarded, _lifecycle


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it carries."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


@dataclass
class ReceivedSpan:
    """One decoded span, flattened for assertions."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status_code: int
    status_message: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    events: list[tuple[str, dict[str, Any]]]


@dataclass
class Receiver:
    """What the OTLP receiver got; `status` sets the HTTP status it answers with."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    spans: list[ReceivedSpan] = field(default_factory=list)
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_name(self, name: str) -> ReceivedSpan:
        matches = [s for s in self.spans if s.name == name]
        assert len(matches) == 1, f"expected one span named {name!r}, got {[s.name for s in self.spans]}"
        return matches[0]

    def names(self) -> list[str]:
        return sorted(s.name for s in self.spans)


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


def _decode(receiver: Receiver, body: bytes) -> None:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    for resource_spans in request.resource_spans:
        resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                receiver.spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        scope=scope_spans.scope.name,
                        events=[(e.name, _attributes(e.attributes)) for e in span.events],
                    )
                )


@pytest.fixture
def otlp_receiver() -> Iterator[Receiver]:
    """A real OTLP/HTTP trace receiver on 127.0.0.1 (any path), decoding protobuf with opentelemetry-proto."""
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            with receiver.lock:
                receiver.requests.append({"path": self.path, "headers": dict(self.headers.items())})
                status = receiver.status
                if status == 200:
                    _decode(receiver, body)
            payload = ExportTraceServiceResponse().SerializeToString() if status == 200 else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Keeps test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def start_veil(otlp_receiver: Receiver) -> Iterator[Callable[..., Receiver]]:
    """`start_veil(**init_kwargs)`: `veil.init()` against the test receiver with a short export interval.

    Shuts the SDK down before the receiver stops, so the final export does not meet a closed port.
    """

    def start(**kwargs: Any) -> Receiver:
        kwargs.setdefault("endpoint", otlp_receiver.url)
        kwargs.setdefault("schedule_delay", 0.05)
        kwargs.setdefault("scrub_pii", False)
        veil.init(**kwargs)
        return otlp_receiver

    yield start
    veil.shutdown()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "veil_internal_errors: the test expects the SDK's guard to catch internal errors"
    )


@pytest.fixture(autouse=True)
def _veil_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Resets the SDK's global state around each test; fails a test in which the SDK swallowed an error.

    Like sentry-python's `internal_exceptions` fixture: the SDK never raises into the app, so a bug would
    otherwise pass silently. Tests that provoke internal errors on purpose use
    `@pytest.mark.veil_internal_errors`.
    """
    _lifecycle._reset_for_tests()
    caught: list[tuple[str, BaseException]] = []
    remove = _guarded._add_capture_hook(lambda stage, exc: caught.append((stage, exc)))
    try:
        yield
        _lifecycle._reset_for_tests()
    finally:
        remove()
    if caught and request.node.get_closest_marker("veil_internal_errors") is None:
        stage, exc = caught[0]
        raise AssertionError(f"the SDK caught an internal error in {stage}: {exc!r}") from exc
