"""Server side of the guardrails: ``POST /v1/guard`` scoring on micro-batched classifier calls.

- ``batcher``: :class:`MicroBatcher`, many concurrent callers onto one batch function.
- ``scoring``: :class:`Scorer`, the toxicity and bias scores (also used by the SDK in-process).
- ``service``: :class:`GuardService`, decisions, metrics and recording.
- ``decisions``: :class:`DecisionLog`, batched inserts into ``guard_decisions``.
"""
