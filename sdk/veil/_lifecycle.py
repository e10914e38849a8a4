"""`veil.init()`, `flush()`, `shutdown()`, `stats()`: building and tearing down the export pipeline.

Pipeline: `VeilSpan` → `VeilSpanProcessor` (bounded queue, export thread, conversion) →
`ScrubbingSpanExporter` (PII scrub hook) → `VeilOTLPExporter` (protobuf encoded directly, gzip level 1).

`init()` is set-once: a second call logs a warning and changes nothing. If the application already has an
OpenTelemetry SDK `TracerProvider` (global, or passed as `tracer_provider=`), Veil adds its processor to it,
so the application's own spans are exported to Veil too, and its sampler, resource and other processors
stay as they are. Otherwise Veil creates a provider with a parent-based ratio sampler and installs it as
the global one, so other OTel instrumentations (HTTP clients, the OpenAI contrib package) reach Veil.
"""

from __future__ import annotations

import atexit
import threading
from importlib import metadata
from typing import TypedDict

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from veil import _config, _runtime
from veil import semconv as sc
from veil._convert import Converter
from veil._export import PassThroughScrubber, ScrubbingSpanExporter, SpanScrubber, StripContentScrubber
from veil._guarded import _reset_counts, failure_counts, logger, record_failure
from veil._otlp import otlp_exporter
from veil._processor import VeilSpanProcessor

_lock = threading.Lock()
_last_processor: VeilSpanProcessor | None = None
_atexit_registered = False
_shutdown_timeout = 2.0


class Stats(TypedDict):
    """What `veil.stats()` returns. Counts are spans, since `init()`."""

    exported: int
    """Accepted by the collector."""
    dropped: int
    """Never sent: the queue was full, or the SDK was shutting down."""
    failed: int
    """Sent but rejected, or the collector unreachable after retries, or not convertible."""
    queued: int
    """Waiting to be exported now."""
    internal_errors: dict[str, int]
    """SDK failures caught by the guard, as {"stage/reason": count}."""


def _sdk_version() -> str:
    try:
        return metadata.version("veil")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _default_scrubber() -> SpanScrubber:
    """The PII engine's scrubber when it is installed; pass-through when it is not."""
    try:
        from veil.pii.otel import default_span_scrubber
    except ImportError:
        logger.info("veil: PII engine not available; spans are exported without SDK-side scrubbing")
        return PassThroughScrubber()
    try:
        return default_span_scrubber()
    except Exception as exc:
        record_failure("scrub.init", type(exc).__name__, exc)
        return StripContentScrubber()


def _resource(config: _config.Config, base: Resource | None) -> Resource:
    attributes: dict[str, str] = {}
    if config.service_name is not None:
        attributes[sc.SERVICE_NAME] = config.service_name
    if config.environment is not None:
        attributes[sc.DEPLOYMENT_ENVIRONMENT_NAME] = config.environment
    if base is not None:
        return base.merge(Resource(attributes))
    return Resource.create(attributes)


def init(
    endpoint: str | None = None,
    api_key: str | None = None,
    service_name: str | None = None,
    environment: str | None = None,
    capture_content: bool | None = None,
    sample_rate: float | None = None,
    *,
    scrub_pii: bool | None = None,
    scrubber: SpanScrubber | None = None,
    tracer_provider: TracerProvider | None = None,
    exporter: SpanExporter | None = None,
    max_attribute_size: int | None = None,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
    schedule_delay: float | None = None,
    export_timeout: float | None = None,
    shutdown_timeout: float | None = None,
) -> None:
    """Starts exporting spans to Veil. Call once at startup; later calls warn and do nothing.

    Every argument left as None falls back to the environment, then to a default (table in
    `veil._config`): `capture_content` to VEIL_CAPTURE_CONTENT then True, `sample_rate` to
    VEIL_SAMPLE_RATE then 1.0, and so on.

    Args:
        endpoint: Collector URL; a base URL gets `/v1/traces` appended.
        api_key: Sent as `Authorization: Bearer <key>`.
        service_name: Resource `service.name`.
        environment: Resource `deployment.environment.name`.
        capture_content: Record prompts, completions, arguments and results (models, usage and timings
            are always recorded).
        sample_rate: Fraction of traces kept, decided at the root and inherited by every child.
        scrub_pii: Run the PII engine's scrubber on the export thread (when `scrubber` is None).
        scrubber: A `SpanScrubber` to use instead of the default one.
        tracer_provider: An OTel SDK provider to add Veil's processor to (default: the global one, if it
            is an SDK provider).
        exporter: Where spans go instead of OTLP/HTTP (still behind the scrubber).
        max_attribute_size: Byte limit of each content attribute; longer values are truncated.
        max_queue_size: Spans buffered at most; more are dropped and counted.
        max_export_batch_size: Spans per export request.
        schedule_delay: Seconds between exports.
        export_timeout: Seconds one export (with retries) may take.
        shutdown_timeout: Seconds the interpreter-exit flush may take.

    Raises:
        ValueError: When an explicit argument is invalid (environment values are logged and defaulted).
    """
    global _last_processor, _atexit_registered, _shutdown_timeout
    with _lock:
        if _runtime.ACTIVE is not None:
            logger.warning("veil.init() was already called; this call is ignored")
            return
        config = _config.resolve(
            endpoint=endpoint,
            api_key=api_key,
            service_name=service_name,
            environment=environment,
            capture_content=capture_content,
            sample_rate=sample_rate,
            scrub_pii=scrub_pii,
            max_attribute_size=max_attribute_size,
            max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
            schedule_delay=schedule_delay,
            export_timeout=export_timeout,
            shutdown_timeout=shutdown_timeout,
        )
        provider = tracer_provider
        if provider is None:
            current = trace.get_tracer_provider()
            provider = current if isinstance(current, TracerProvider) else None
        owns_provider = provider is None
        resource = _resource(config, provider.resource if provider is not None else None)

        if scrubber is None:
            scrubber = _default_scrubber() if config.scrub_pii else PassThroughScrubber()
        if exporter is None:
            exporter = otlp_exporter(config.endpoint, config.headers, config.export_timeout)
        converter = Converter(
            resource,
            InstrumentationScope("veil", _sdk_version()),
            capture_content=config.capture_content,
            max_attribute_size=config.max_attribute_size,
        )
        processor = VeilSpanProcessor(
            ScrubbingSpanExporter(exporter, scrubber),
            converter,
            max_queue_size=config.max_queue_size,
            max_export_batch_size=min(config.max_export_batch_size, config.max_queue_size),
            schedule_delay=config.schedule_delay,
        )
        if owns_provider:
            provider = TracerProvider(
                resource=resource,
                sampler=ParentBased(TraceIdRatioBased(config.sample_rate)),
                shutdown_on_exit=False,
            )
            trace.set_tracer_provider(provider)
            if trace.get_tracer_provider() is not provider:
                # Someone else won a race to set the global provider; keep our spans to ourselves.
                owns_provider = False
        provider.add_span_processor(processor)

        _last_processor = processor
        _shutdown_timeout = config.shutdown_timeout
        if not _atexit_registered:
            atexit.register(_flush_at_exit)
            _atexit_registered = True
        _runtime.ACTIVE = _runtime.Runtime(processor, config.sample_rate, provider, owns_provider)


def flush(timeout: float = 5.0) -> bool:
    """Exports every span finished so far. Returns True when that completed within `timeout` seconds.

    Never raises; before `init()` there is nothing to flush and it returns True.
    """
    runtime = _runtime.ACTIVE
    if runtime is None:
        return True
    try:
        return runtime.processor.force_flush(int(timeout * 1000))
    except Exception as exc:
        record_failure("flush", type(exc).__name__, exc)
        return False


def shutdown(timeout: float = 5.0) -> None:
    """Flushes (within `timeout` seconds) and stops the export thread. Decorators pass through afterwards.

    Safe to call more than once, and before `init()`. `init()` may be called again afterwards.
    """
    with _lock:
        runtime = _runtime.ACTIVE
        _runtime.ACTIVE = None
    if runtime is None:
        return
    try:
        runtime.processor.shutdown(int(timeout * 1000))
    except Exception as exc:
        record_failure("shutdown", type(exc).__name__, exc)


def _flush_at_exit() -> None:
    shutdown(_shutdown_timeout)


def stats() -> Stats:
    """Span counts since the last `init()` (kept after `shutdown()`), plus caught internal errors."""
    processor = _last_processor
    if processor is None:
        return Stats(exported=0, dropped=0, failed=0, queued=0, internal_errors=failure_counts())
    return Stats(
        exported=processor.exported,
        dropped=processor.dropped,
        failed=processor.failed,
        queued=processor.queued(),
        internal_errors=failure_counts(),
    )


def _reset_for_tests() -> None:
    """Returns the SDK and OpenTelemetry's global tracer provider to their never-initialized state.

    For tests only (tests/sdk/conftest.py calls it around every test): shuts down any active pipeline,
    forgets the global provider (OTel's set-once guard included, as OTel's own test helpers do) and
    clears the counted internal failures.
    """
    global _last_processor
    shutdown(timeout=1.0)
    _last_processor = None
    trace._TRACER_PROVIDER_SET_ONCE._done = False
    trace._TRACER_PROVIDER = None
    _reset_counts()
