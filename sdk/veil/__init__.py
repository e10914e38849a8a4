"""Veil SDK: OpenTelemetry GenAI tracing that scrubs PII before anything leaves the process.

    import veil

    veil.init(endpoint="http://localhost:4318", api_key="...")

    @veil.observe(kind="llm")
    def answer(messages, model="gpt-4o-mini"): ...

Before `init()` every decorator and context helper passes calls straight through.
"""

from __future__ import annotations

from veil._context import context
from veil._export import PassThroughScrubber, ScrubbingSpanExporter, SpanScrubber
from veil._lifecycle import Stats, flush, init, shutdown, stats
from veil._observe import observe, span, update_current

__all__ = [
    "PassThroughScrubber",
    "ScrubbingSpanExporter",
    "SpanScrubber",
    "Stats",
    "context",
    "flush",
    "init",
    "observe",
    "shutdown",
    "span",
    "stats",
    "update_current",
]
