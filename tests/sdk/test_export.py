"""The export path: flush, shutdown, exit, collector down, sampling, threads, drops, the scrub hook, setup."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import veil
from veil import _genai, _lifecycle, _runtime
from veil import semconv as sc
from veil._export import PassThroughScrubber, StripContentScrubber


@veil.observe(kind="tool")
def work(i: int) -> int:
    return i


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_flush_exports_and_stats_count(start_veil: Any) -> None:
    receiver = start_veil(schedule_delay=60)
    for i in range(5):
        work(i)
    assert veil.stats()["queued"] == 5
    assert veil.flush(5)
    assert len(receiver.spans) == 5
    stats = veil.stats()
    assert (stats["exported"], stats["dropped"], stats["failed"], stats["queued"]) == (5, 0, 0, 0)


def test_shutdown_exports_what_is_queued_then_decorators_pass_through(start_veil: Any) -> None:
    receiver = start_veil(schedule_delay=60)
    work(1)
    veil.shutdown()
    assert len(receiver.spans) == 1
    assert work(2) == 2
    veil.shutdown()  # idempotent
    assert veil.stats()["exported"] == 1


def test_request_carries_api_key_gzip_and_traces_path(start_veil: Any) -> None:
    receiver = start_veil(api_key="vk_test_123")
    work(1)
    assert veil.flush(5)
    request = receiver.requests[0]
    assert request["path"] == "/v1/traces"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == "Bearer vk_test_123"
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/x-protobuf"


def test_environment_variables_configure_endpoint_service_headers_and_key(
    otlp_receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=ml")
    monkeypatch.setenv("VEIL_API_KEY", "env-key")
    monkeypatch.setenv("VEIL_ENVIRONMENT", "staging")
    monkeypatch.setenv("VEIL_SCRUB_PII", "false")
    monkeypatch.setenv("VEIL_SCHEDULE_DELAY", "0.05")
    veil.init()
    work(1)
    assert veil.flush(5)
    span = otlp_receiver.spans[0]
    assert span.resource[sc.SERVICE_NAME] == "from-env"
    assert span.resource[sc.DEPLOYMENT_ENVIRONMENT_NAME] == "staging"
    headers = {k.lower(): v for k, v in otlp_receiver.requests[0]["headers"].items()}
    assert headers["x-team"] == "ml"
    assert headers["authorization"] == "Bearer env-key"


def test_bad_environment_values_are_logged_and_defaulted(
    start_veil: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("VEIL_SAMPLE_RATE", "lots")
    receiver = start_veil()
    work(1)
    assert veil.flush(5)
    assert len(receiver.spans) == 1  # the default rate 1.0 applies
    assert "ignoring VEIL_SAMPLE_RATE='lots'" in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [{"sample_rate": 1.5}, {"endpoint": "localhost:4318"}, {"max_queue_size": 0}, {"max_attribute_size": 10}],
)
def test_invalid_arguments_raise_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"veil.init\(\)"):
        veil.init(**kwargs)


def test_second_init_warns_and_changes_nothing(start_veil: Any, caplog: pytest.LogCaptureFixture) -> None:
    receiver = start_veil()
    veil.init(endpoint="http://127.0.0.1:9", service_name="other")
    assert "already called" in caplog.text
    work(1)
    assert veil.flush(5)
    assert len(receiver.spans) == 1


def test_existing_tracer_provider_is_reused_not_replaced(start_veil: Any) -> None:
    app_exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(app_exporter))
    trace.set_tracer_provider(provider)
    receiver = start_veil()
    assert trace.get_tracer_provider() is provider
    with trace.get_tracer("app").start_as_current_span("app span"):
        work(1)
    assert veil.flush(5)
    assert [s.name for s in app_exporter.get_finished_spans()] == ["app span"]
    assert receiver.names() == ["app span", "execute_tool work"]


@pytest.mark.timeout(60)
def test_collector_down_never_raises_and_time_is_bounded() -> None:
    veil.init(
        endpoint=f"http://127.0.0.1:{_closed_port()}", export_timeout=1, schedule_delay=0.05, scrub_pii=False
    )
    for i in range(200):
        assert work(i) == i
    veil.flush(timeout=3)
    veil.shutdown(timeout=2)
    stats = veil.stats()
    assert stats["exported"] == 0
    assert stats["failed"] + stats["dropped"] == 200


def test_rejected_batches_are_counted_as_failed(start_veil: Any) -> None:
    receiver = start_veil()
    receiver.status = 400  # not retryable
    work(1)
    work(2)
    assert veil.flush(5)
    assert veil.stats()["failed"] == 2
    assert veil.stats()["exported"] == 0


def test_head_sampling_keeps_or_drops_whole_traces(start_veil: Any) -> None:
    receiver = start_veil(sample_rate=0.5)

    @veil.observe(kind="agent")
    def root(i: int) -> int:
        return work(i)

    for i in range(400):
        root(i)
    assert veil.flush(5)
    roots = {s.span_id: s for s in receiver.spans if s.name == "invoke_agent root"}
    children = [s for s in receiver.spans if s.name == "execute_tool work"]
    assert 120 < len(roots) < 280
    assert len(children) == len(roots)
    assert all(c.parent_span_id in roots for c in children)


def test_sample_rate_zero_and_unsampled_remote_parent_export_nothing(start_veil: Any) -> None:
    receiver = start_veil(sample_rate=1.0)
    unsampled = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    with trace.use_span(NonRecordingSpan(unsampled)):
        work(1)
    assert veil.flush(5)
    assert receiver.spans == []


def test_eight_threads_at_once(start_veil: Any) -> None:
    receiver = start_veil()

    def run(n: int) -> None:
        for i in range(200):
            assert work(n * 1000 + i) == n * 1000 + i

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert veil.flush(10)
    assert len(receiver.spans) == 1600
    assert len({s.span_id for s in receiver.spans}) == 1600
    assert len({s.trace_id for s in receiver.spans}) == 1600
    assert veil.stats()["dropped"] == 0


class _BlockingExporter(SpanExporter):
    """Holds the export thread until released, so the queue fills up deterministically."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_full_queue_drops_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    exporter = _BlockingExporter()
    veil.init(
        exporter=exporter, max_queue_size=10, max_export_batch_size=5, schedule_delay=0.01, scrub_pii=False
    )
    work(0)
    assert exporter.entered.wait(5)  # the export thread is now stuck on one span
    for i in range(30):
        work(i)
    exporter.release.set()
    assert veil.flush(5)
    stats = veil.stats()
    assert stats["dropped"] == 20
    assert stats["exported"] == exporter.count == 11
    assert caplog.text.count("dropping spans") == 1


def test_repeated_flushes_against_a_stuck_collector_do_not_pile_up_threads() -> None:
    exporter = _BlockingExporter()
    veil.init(exporter=exporter, schedule_delay=60, scrub_pii=False)
    work(0)
    try:
        for _ in range(30):  # say, one flush per request with a short timeout, while the collector hangs
            work(1)
            assert not veil.flush(0.01)
        assert exporter.entered.is_set()
        helpers = [t for t in threading.enumerate() if t.name == "veil-flush"]
        assert len(helpers) <= 2  # one exporting, one waiting to: not one per call
    finally:
        exporter.release.set()
    assert veil.flush(5)
    assert veil.stats()["exported"] == exporter.count == 31


class _RecordingScrubber:
    def __init__(self) -> None:
        self.threads: set[str] = set()

    def scrub(self, spans: Sequence[ReadableSpan]) -> Sequence[ReadableSpan]:
        self.threads.add(threading.current_thread().name)
        out = []
        for span in spans:
            attributes = dict(span.attributes or {})
            attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = "[REDACTED]"
            attributes[sc.VEIL_PII_SCRUBBED] = True
            out.append(
                ReadableSpan(
                    name=span.name,
                    context=span.context,
                    parent=span.parent,
                    resource=span.resource,
                    attributes=attributes,
                    kind=span.kind,
                    start_time=span.start_time,
                    end_time=span.end_time,
                    instrumentation_scope=span.instrumentation_scope,
                )
            )
        return out


def test_scrubber_runs_on_the_export_thread_and_its_output_is_exported(start_veil: Any) -> None:
    scrubber = _RecordingScrubber()
    receiver = start_veil(scrubber=scrubber)
    work(42)
    assert veil.flush(5)
    assert receiver.spans[0].attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == "[REDACTED]"
    assert receiver.spans[0].attributes[sc.VEIL_PII_SCRUBBED] is True
    assert threading.current_thread().name not in scrubber.threads


class _FailingScrubber:
    def scrub(self, spans: Sequence[ReadableSpan]) -> Sequence[ReadableSpan]:
        raise RuntimeError("scrubber bug")


@pytest.mark.veil_internal_errors
def test_scrubber_failure_exports_spans_without_content(start_veil: Any) -> None:
    receiver = start_veil(scrubber=_FailingScrubber())

    @veil.observe
    def leaky(email: str) -> str:
        raise ValueError(f"bad address {email}")

    work(7)
    with pytest.raises(ValueError):
        leaky("jane@example.com")
    assert veil.flush(5)
    assert len(receiver.spans) == 2
    for span in receiver.spans:
        assert span.attributes[sc.VEIL_CONTENT_DROPPED] is True
        assert not set(span.attributes) & sc.CONTENT_ATTRIBUTES
        for _, attrs in span.events:
            assert "jane@example.com" not in str(attrs)
    assert veil.stats()["internal_errors"]["scrub/RuntimeError"] == 1
    assert veil.stats()["exported"] == 2


@pytest.mark.veil_internal_errors
def test_repeated_internal_failures_are_counted_each_time_and_logged_once(
    start_veil: Any, caplog: pytest.LogCaptureFixture
) -> None:
    start_veil(scrubber=_FailingScrubber())
    for i in range(3):
        work(i)
        assert veil.flush(5)
    assert veil.stats()["internal_errors"]["scrub/RuntimeError"] == 3
    assert caplog.text.count("internal failure in scrub") == 1


@pytest.mark.veil_internal_errors
def test_default_scrubber_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    monkeypatch.setitem(sys.modules, "veil.pii.otel", None)  # the PII engine is not installed
    assert isinstance(_lifecycle._default_scrubber(), PassThroughScrubber)

    def broken() -> Any:
        raise OSError("model files missing")

    # The PII engine is installed but cannot build its scrubber: privacy first, no content leaves.
    monkeypatch.setitem(sys.modules, "veil.pii.otel", types.SimpleNamespace(default_span_scrubber=broken))
    assert isinstance(_lifecycle._default_scrubber(), StripContentScrubber)


@pytest.mark.veil_internal_errors
def test_a_span_that_cannot_be_converted_is_counted_and_others_still_export(
    start_veil: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = start_veil()

    def extraction_bug(response: Any) -> dict[str, Any]:
        raise RuntimeError("extraction bug")

    # Stands in for any bug in the export-thread conversion of one span.
    monkeypatch.setattr(_genai, "response_attributes", extraction_bug)

    @veil.observe(kind="llm")
    def call() -> str:
        return "answer"

    assert call() == "answer"
    work(1)
    assert veil.flush(5)
    assert receiver.names() == ["execute_tool work"]
    assert veil.stats()["failed"] == 1
    assert veil.stats()["internal_errors"] == {"convert/RuntimeError": 1}


@pytest.mark.veil_internal_errors
def test_a_failure_when_a_span_starts_leaves_the_call_untouched(
    start_veil: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = start_veil()

    def broken_start(self: Any, target: Any) -> Any:
        raise RuntimeError("start bug")

    monkeypatch.setattr(_runtime.Runtime, "start", broken_start)
    assert work(5) == 5
    assert veil.flush(5)
    assert receiver.spans == []
    assert veil.stats()["internal_errors"] == {"observe.start/RuntimeError": 1}


def test_hostile_response_objects_do_not_lose_the_span(start_veil: Any) -> None:
    receiver = start_veil()

    class Hostile:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("hostile proxy")

        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    @veil.observe(kind="llm", name="proxy-call")
    def call() -> Hostile:
        trace.get_current_span().set_attribute(7, "non-string key")  # type: ignore[arg-type]
        return Hostile()

    call()
    assert veil.flush(5)
    span = receiver.by_name("proxy-call")
    assert span.attributes["7"] == "non-string key"
    assert span.attributes[sc.VEIL_OUTPUT] == '"<unserializable Hostile>"'


def test_spans_are_flushed_at_interpreter_exit(otlp_receiver: Any) -> None:
    script = textwrap.dedent(
        f"""
        import veil
        veil.init(endpoint={otlp_receiver.url!r}, schedule_delay=60, scrub_pii=False)

        @veil.observe
        def job():
            return 1

        job()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert otlp_receiver.names() == ["invoke_workflow job"]


def test_internal_logger_is_quiet_on_success(start_veil: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="veil.internal")
    start_veil()
    work(1)
    assert veil.flush(5)
    assert [r for r in caplog.records if r.name == "veil.internal" and r.levelno >= logging.WARNING] == []


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_exports_with_a_fresh_export_thread(start_veil: Any) -> None:
    receiver = start_veil()
    work(0)
    assert veil.flush(5)
    pid = os.fork()
    if pid == 0:  # the child: a pre-fork server worker, say
        code = 1
        try:
            work(1)
            code = 0 if veil.flush(10) and veil.stats()["exported"] >= 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(s.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] for s in receiver.spans) == [
        '{"i":0}',
        '{"i":1}',
    ]


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_the_export_thread_counts_does_not_deadlock_the_child(start_veil: Any) -> None:
    receiver = start_veil()
    runtime = _runtime.ACTIVE
    assert runtime is not None
    # The export thread takes this lock after every batch; a fork at that moment copies it locked.
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with runtime.processor._counts_lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work(1)
            code = 0 if veil.flush(3) and veil.stats()["exported"] == 1 else 2
        finally:
            os._exit(code)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [s.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] for s in receiver.spans] == ['{"i":1}']


def test_default_scrubber_is_the_pii_engine_when_installed(start_veil: Any) -> None:
    pytest.importorskip("veil.pii.otel")
    receiver = start_veil(scrub_pii=True)

    @veil.observe(kind="llm")
    def chat(messages: list[dict[str, str]]) -> str:
        return "Noted, we will write to jane.doe@example.com."

    chat([{"role": "user", "content": "Email me at jane.doe@example.com please"}])
    assert veil.flush(10)
    attrs = receiver.spans[0].attributes
    assert "jane.doe@example.com" not in attrs[sc.GEN_AI_INPUT_MESSAGES]
    assert "jane.doe@example.com" not in attrs[sc.GEN_AI_OUTPUT_MESSAGES]
    assert attrs[sc.VEIL_PII_SCRUBBED] is True


def test_exception_message_in_an_app_spans_status_is_scrubbed(start_veil: Any) -> None:
    # OTel's SDK sets the status description of a span that an exception leaves to "Type: message".
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    receiver = start_veil(scrub_pii=True)
    with pytest.raises(ValueError), trace.get_tracer("app").start_as_current_span("app span"):
        raise ValueError("bad address jane@example.com")
    assert veil.flush(5)
    span = receiver.by_name("app span")
    assert span.status_message.startswith("ValueError: bad address [EMAIL")
    assert "jane@example.com" not in span.status_message
    assert "jane@example.com" not in str(span.events)


@pytest.mark.veil_internal_errors
def test_scrubber_failure_strips_the_exception_message_from_an_app_spans_status(start_veil: Any) -> None:
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    receiver = start_veil(scrubber=_FailingScrubber())
    with pytest.raises(ValueError), trace.get_tracer("app").start_as_current_span("app span"):
        raise ValueError("bad address jane@example.com")
    assert veil.flush(5)
    span = receiver.by_name("app span")
    assert span.status_code == 2
    assert "jane@example.com" not in span.status_message
