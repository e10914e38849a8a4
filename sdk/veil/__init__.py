"""Veil SDK: OpenTelemetry GenAI tracing that scrubs PII before anything leaves the process.

    import veil

    veil.init(endpoint="http://localhost:4318", api_key="...")

    @veil.observe(kind="llm")
    @veil.guard(input=["pii", "secrets"], output=["toxicity"])
    def answer(messages, model="gpt-4o-mini"): ...

Before `init()` every decorator and context helper passes calls straight through.
"""

from __future__ import annotations

from veil._context import context
from veil._export import PassThroughScrubber, ScrubbingSpanExporter, SpanScrubber
from veil._lifecycle import Stats, flush, init, shutdown, stats
from veil._observe import observe, span, update_current

# ``veil.guard`` is the decorator; the checks, results and the vault live in ``veil.guardrails``.
from veil.guardrails import GuardResult, GuardViolation, check_input, check_output, guard

__all__ = [
    "GuardResult",
    "GuardViolation",
    "PassThroughScrubber",
    "ScrubbingSpanExporter",
    "SpanScrubber",
    "Stats",
    "check_input",
    "check_output",
    "context",
    "flush",
    "guard",
    "init",
    "observe",
    "shutdown",
    "span",
    "stats",
    "update_current",
]
