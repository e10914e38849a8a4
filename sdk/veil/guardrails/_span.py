"""Writes guard decisions onto the current span, where the collector's ingest turns them into rows.

Each decision becomes one span event named ``veil.guard``; a blocked text also marks the span with
``veil.guard.blocked = true``. Put ``@veil.observe`` above ``@veil.guard`` so the decisions land on the
call's own span. Without a recording span this does nothing.
"""

from __future__ import annotations

from opentelemetry import trace

from veil.guardrails._result import GuardResult
from veil.semconv import (
    VEIL_GUARD_BLOCKED,
    VEIL_GUARD_CHECK,
    VEIL_GUARD_DECISION,
    VEIL_GUARD_EVENT,
    VEIL_GUARD_REASON,
    VEIL_GUARD_SCORE,
    VEIL_GUARD_TARGET,
)


def record_decisions(result: GuardResult) -> None:
    """Adds one ``veil.guard`` event per decision in ``result`` to the current span, if it records."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for decision in result.decisions:
        attributes: dict[str, str | float] = {
            VEIL_GUARD_CHECK: decision.check,
            VEIL_GUARD_DECISION: decision.decision,
            VEIL_GUARD_SCORE: decision.score,
            VEIL_GUARD_TARGET: result.target,
        }
        if decision.reason:
            attributes[VEIL_GUARD_REASON] = decision.reason
        span.add_event(VEIL_GUARD_EVENT, attributes)
    if not result.passed:
        span.set_attribute(VEIL_GUARD_BLOCKED, True)


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None outside a valid span context."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
