"""Writes guard decisions onto the current span, where the collector's ingest turns them into rows.

Each decision becomes one span event named ``veil.guard``; a blocked text also marks the span with
``veil.guard.blocked = true``. Put ``@veil.observe`` above ``@veil.guard`` so the decisions land on the
call's own span. Without a recording span this does nothing.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import trace

from veil.guard._result import GuardResult

# Names of the guard event and its attributes (the collector's ingest reads the same names).
GUARD_EVENT: Final = "veil.guard"
GUARD_CHECK: Final = "veil.guard.check"
GUARD_DECISION: Final = "veil.guard.decision"
GUARD_SCORE: Final = "veil.guard.score"
GUARD_TARGET: Final = "veil.guard.target"
GUARD_REASON: Final = "veil.guard.reason"
GUARD_BLOCKED: Final = "veil.guard.blocked"


def record_decisions(result: GuardResult) -> None:
    """Adds one ``veil.guard`` event per decision in ``result`` to the current span, if it records."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for decision in result.decisions:
        attributes: dict[str, str | float] = {
            GUARD_CHECK: decision.check,
            GUARD_DECISION: decision.decision,
            GUARD_SCORE: decision.score,
            GUARD_TARGET: result.target,
        }
        if decision.reason:
            attributes[GUARD_REASON] = decision.reason
        span.add_event(GUARD_EVENT, attributes)
    if not result.passed:
        span.set_attribute(GUARD_BLOCKED, True)


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None outside a valid span context."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
