"""The export path after the queue: the PII scrub hook, then the wrapped exporter (OTLP/HTTP).

`SpanScrubber` is the contract with the PII engine (`veil.pii.otel.default_span_scrubber()` returns one).
It runs on the export thread, never on the application's.

Failure policy, privacy first: if the scrubber raises or returns something that is not a sequence of
spans, the batch is NOT exported raw and NOT silently lost. Every content attribute
(`semconv.CONTENT_ATTRIBUTES`) and every exception message is removed, `veil.content.dropped = true` is
set, and the stripped spans are exported, so traces, timings, models and token counts survive while no
unscrubbed text leaves the process. The failure is counted under stage "scrub" in `veil.stats()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from opentelemetry.util.types import AttributeValue

from veil import semconv as sc
from veil._guarded import capture_internal_exceptions, record_failure

# Exception event attributes that may quote user content.
_EVENT_CONTENT_KEYS = frozenset({"exception.message", "exception.stacktrace"})


@runtime_checkable
class SpanScrubber(Protocol):
    """Removes or masks sensitive content in finished spans before they leave the process.

    `scrub` runs on the export thread with one batch. It returns the spans to export: the same objects, or
    new `ReadableSpan`s with changed attributes. It may raise; `ScrubbingSpanExporter` then exports the
    batch with all content removed (see the module docstring).
    """

    def scrub(self, spans: Sequence[ReadableSpan]) -> Sequence[ReadableSpan]: ...


class PassThroughScrubber:
    """The scrubber used when PII scrubbing is off or the PII engine is not installed: changes nothing."""

    def scrub(self, spans: Sequence[ReadableSpan]) -> Sequence[ReadableSpan]:
        return spans


class StripContentScrubber:
    """Removes all content from every span; used when the configured PII scrubber could not be built."""

    def scrub(self, spans: Sequence[ReadableSpan]) -> Sequence[ReadableSpan]:
        return [strip_content(span) for span in spans]


def strip_content(span: ReadableSpan) -> ReadableSpan:
    """Returns a copy of `span` without content attributes or exception messages, marked as such.

    The status keeps its code but loses its description: OTel's SDK writes "Type: message" there when
    an exception leaves a span.
    """
    attributes = {k: v for k, v in (span.attributes or {}).items() if k not in sc.CONTENT_ATTRIBUTES}
    attributes[sc.VEIL_CONTENT_DROPPED] = True
    events = [
        Event(
            event.name,
            {k: v for k, v in (event.attributes or {}).items() if k not in _EVENT_CONTENT_KEYS},
            event.timestamp,
        )
        for event in span.events
    ]
    status = span.status
    if status.description:
        status = Status(status.status_code)
    return with_content(span, attributes, events, status)


def with_content(
    span: ReadableSpan,
    attributes: Mapping[str, AttributeValue],
    events: Sequence[Event],
    status: Status | None = None,
) -> ReadableSpan:
    """A copy of ``span`` with other attributes, events and (if given) status; the original is unchanged."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=span.status if status is None else status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanExporter(SpanExporter):
    """Wraps an exporter: scrubs each batch with a `SpanScrubber`, then exports it.

    Args:
        exporter: Where scrubbed spans go (OTLP/HTTP in production, anything in tests).
        scrubber: The hook; `PassThroughScrubber()` when None.
    """

    def __init__(self, exporter: SpanExporter, scrubber: SpanScrubber | None = None) -> None:
        self._exporter = exporter
        self._scrubber: SpanScrubber = scrubber if scrubber is not None else PassThroughScrubber()

    @property
    def scrubber(self) -> SpanScrubber:
        """The scrub hook in use."""
        return self._scrubber

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Scrubs, then exports; returns the wrapped exporter's result (FAILURE if it raised)."""
        try:
            scrubbed = self._scrubber.scrub(spans)
            if not isinstance(scrubbed, Sequence):
                raise TypeError(f"scrubber returned {type(scrubbed).__name__}, expected a sequence of spans")
        except Exception as exc:
            record_failure("scrub", type(exc).__name__, exc)
            scrubbed = [strip_content(span) for span in spans]
        if not scrubbed:
            return SpanExportResult.SUCCESS
        with capture_internal_exceptions("export"):
            return self._exporter.export(scrubbed)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        with capture_internal_exceptions("export.shutdown"):
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with capture_internal_exceptions("export.flush"):
            return self._exporter.force_flush(timeout_millis)
        return False
