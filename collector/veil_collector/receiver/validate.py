"""Per-span validation: spans with unusable ids are dropped and reported as a partial success."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MAX_REASONS = 3


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """What ``drop_invalid_spans`` kept and dropped.

    Attributes:
        accepted: spans left in the request.
        rejected: spans removed from it.
        message: a readable summary of the first few reasons, empty when nothing was rejected.
    """

    accepted: int
    rejected: int
    message: str


def _problem(span: Span) -> str | None:
    if len(span.trace_id) != 16 or span.trace_id == _ZERO_TRACE:
        return "trace_id must be 16 non-zero bytes (32 hex characters in JSON)"
    if len(span.span_id) != 8 or span.span_id == _ZERO_SPAN:
        return "span_id must be 8 non-zero bytes (16 hex characters in JSON)"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "parent_span_id must be empty or 8 bytes (16 hex characters in JSON)"
    return None


def drop_invalid_spans(request: ExportTraceServiceRequest) -> ValidationResult:
    """Remove, in place, every span whose ids are missing or malformed.

    The OTel ClickHouse schema keys traces by these ids, so such a span could never be found again.
    Empty resource and scope envelopes are kept; they cost nothing downstream.
    """
    accepted = rejected = 0
    reasons: list[str] = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            problems = [_problem(span) for span in spans]
            bad = [i for i, problem in enumerate(problems) if problem is not None]
            for index in reversed(bad):
                if len(reasons) < _MAX_REASONS:
                    reasons.append(f"span {spans[index].name!r}: {problems[index]}")
                del spans[index]
            rejected += len(bad)
            accepted += len(spans)
    message = ""
    if rejected:
        message = f"rejected {rejected} span(s) with invalid ids: " + "; ".join(reasons)
    return ValidationResult(accepted, rejected, message)
