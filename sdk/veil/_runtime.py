"""The SDK's global state after `veil.init()`: the processor, the sampler bound, and span creation.

`ACTIVE` is None before `init()` and after `shutdown()`; wrappers read it once per call and pass straight
through when it is None. Span creation (`Runtime.start`) is the hot path: one context lookup, two random
draws at most, one object.
"""

from __future__ import annotations

import random
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN

from veil._context import current_stamps
from veil._processor import VeilSpanProcessor
from veil._span import SpanTarget, VeilSpan

_get_current_span = trace.get_current_span
_getrandbits = random.getrandbits
_LOW_64 = (1 << 64) - 1


class Runtime:
    """One initialized SDK: where spans go and how roots are sampled.

    Args:
        processor: The queue finished spans are submitted to.
        sample_rate: Fraction of new traces kept. Like OTel's `TraceIdRatioBased`, the decision compares the
            trace id's low 64 bits with a bound, so every SDK that sees the same trace id agrees; children
            follow their parent's decision (parent-based), so a trace is kept or dropped whole.
        provider: The OTel `TracerProvider` the processor was added to, if any.
        owns_provider: True when `init()` created that provider.
    """

    __slots__ = ("_bound", "owns_provider", "processor", "provider")

    def __init__(
        self,
        processor: VeilSpanProcessor,
        sample_rate: float,
        provider: Any = None,
        owns_provider: bool = False,
    ) -> None:
        self.processor = processor
        self.provider = provider
        self.owns_provider = owns_provider
        self._bound = round(sample_rate * (1 << 64))

    def start(self, target: SpanTarget) -> VeilSpan:
        """Opens a span for `target` as a child of the current span (Veil's or any OTel span)."""
        parent = _get_current_span()
        if type(parent) is VeilSpan:
            return VeilSpan(
                self.processor,
                target,
                parent.trace_id,
                _getrandbits(64) or 1,
                parent.span_id,
                None,
                parent.sampled,
                current_stamps(),
            )
        if parent is not INVALID_SPAN:
            context = parent.get_span_context()
            if context.is_valid:
                return VeilSpan(
                    self.processor,
                    target,
                    context.trace_id,
                    _getrandbits(64) or 1,
                    context.span_id,
                    context,
                    context.trace_flags.sampled,
                    current_stamps(),
                )
        trace_id = _getrandbits(128) or 1
        return VeilSpan(
            self.processor,
            target,
            trace_id,
            _getrandbits(64) or 1,
            0,
            None,
            (trace_id & _LOW_64) < self._bound,
            current_stamps(),
        )


ACTIVE: Runtime | None = None
