"""The guard service behind ``POST /v1/guard``: toxicity and bias decisions for texts, micro-batched.

Every request's texts go through one :class:`~veil_collector.guard.batcher.MicroBatcher`, so concurrent
requests share forward passes of the classifier and each request gets back exactly its own scores
(:mod:`~veil_collector.guard.scoring` defines the scores). The service turns scores into decisions with the
caller's thresholds and ``on_fail``, records them (``guard_decisions`` rows, source ``collector``) and
observes latency and batch sizes on ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter, Histogram

from veil_collector.classify.process import close_classifier, start_toxicity_classifier
from veil_collector.guard.batcher import MicroBatcher
from veil_collector.guard.scoring import CHECKS, ScoreItem, Scorer, TextScores
from veil_collector.records import GuardDecision

if TYPE_CHECKING:
    from veil_collector.classify.base import TextClassifier
    from veil_collector.config import Settings
    from veil_collector.guard.decisions import DecisionLog

DEFAULT_THRESHOLDS: dict[str, float] = {"toxicity": 0.5, "bias": 0.5}

# Sub-millisecond to seconds: a batched GPU forward pass takes a few ms, a CPU one tens to hundreds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GUARD_LATENCY = Histogram(
    "veil_guard_request_seconds",
    "Time to answer one POST /v1/guard, from receipt to decisions (queueing and batching included).",
    buckets=_LATENCY_BUCKETS,
)
GUARD_BATCH_SECONDS = Histogram(
    "veil_guard_batch_seconds", "Time of one classifier batch of the guard.", buckets=_LATENCY_BUCKETS
)
GUARD_BATCH_TEXTS = Histogram(
    "veil_guard_batch_texts",
    "Texts per classifier batch of the guard (how well concurrent requests were merged).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
GUARD_DECISIONS = Counter(
    "veil_guard_decisions_total", "Guard decisions by check and decision.", ["check", "decision"]
)
# Bound once: ``labels()`` takes a lock and builds a key on every call, on the event loop's hot path.
# Bound children are also exported at 0 before the first decision, so rates start from a known value.
_DECISION_COUNTERS = {
    (check, decision): GUARD_DECISIONS.labels(check, decision)
    for check in CHECKS
    for decision in ("pass", "block", "flag")
}


@dataclass(frozen=True, slots=True)
class CheckVerdict:
    """One check on one text: its score and the caller's policy applied to it."""

    check: str
    score: float
    decision: Literal["pass", "block", "flag"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asked and about what: the columns of the ``guard_decisions`` rows."""

    project_id: str
    target: Literal["input", "output"] = "input"
    trace_id: str = ""
    span_id: str = ""
    service_name: str = ""
    environment: str = ""
    request_model: str = ""


class GuardService:
    """Scores texts for the guard checks on shared, micro-batched classifier calls.

    Args:
        scorer: The classifiers (share the classifier stage's toxicity model when wiring the app, so the
            model is in memory once).
        decisions: Where decisions are recorded; None records nothing.
        max_batch: Most texts per classifier call.
        window_s: The longest a batch waits for more requests after its first one arrived.
        gap_s: A batch closes when no request arrived for this long.
        max_queue: Most requests waiting before new ones are refused (503).
    """

    def __init__(
        self,
        scorer: Scorer,
        *,
        decisions: DecisionLog | None = None,
        max_batch: int = 64,
        window_s: float = 0.02,
        gap_s: float = 0.002,
        max_queue: int = 10_000,
    ) -> None:
        self._scorer = scorer
        self._decisions = decisions
        self._owned_classifier: TextClassifier | None = None  # started by from_settings, stopped by close
        self.model = scorer.model
        self._batcher: MicroBatcher[ScoreItem, TextScores] = MicroBatcher(
            scorer.score,
            max_batch=max_batch,
            window_s=window_s,
            gap_s=gap_s,
            max_queue=max_queue,
            on_batch=_observe_batch,
            name="veil-guard-batcher",
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        toxicity: TextClassifier | None = None,
        decisions: DecisionLog | None = None,
    ) -> GuardService:
        """The service per settings; pass ``toxicity`` to share the classifier stage's model (else the
        service starts its own, per ``classifier_process``, and stops it in :meth:`close`)."""
        owned = toxicity is None
        if toxicity is None:
            toxicity = start_toxicity_classifier(settings)
        service = cls(Scorer(toxicity), decisions=decisions, max_batch=settings.classifier_batch_size)
        service._owned_classifier = toxicity if owned else None
        return service

    async def score(self, texts: Sequence[str], checks: Sequence[str]) -> list[TextScores]:
        """Scores ``texts`` on the next shared batch; one result per text, in order.

        Raises:
            ValueError: a check the collector does not score.
            Overloaded: too many requests are waiting; retry later.
        """
        unknown = set(checks) - set(CHECKS)
        if unknown:
            raise ValueError(f"unknown checks {sorted(unknown)}; the collector scores {', '.join(CHECKS)}")
        wants_bias = "bias" in checks
        return await self._batcher.run([ScoreItem(text, wants_bias) for text in texts])

    async def check(
        self,
        texts: Sequence[str],
        checks: Sequence[str],
        *,
        context: RequestContext,
        thresholds: dict[str, float] | None = None,
        on_fail: Literal["block", "redact", "flag"] = "block",
        record: bool = True,
    ) -> list[tuple[TextScores, list[CheckVerdict]]]:
        """Scores ``texts`` and decides each check: a score at or above its threshold gets ``on_fail``.

        ``redact`` is answered as ``block``: the collector cannot cut toxicity out of a text.
        """
        started = time.perf_counter()
        scores = await self.score(texts, checks)
        limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        action: Literal["block", "flag"] = "flag" if on_fail == "flag" else "block"
        out = []
        for text_scores in scores:
            verdicts = []
            for check in checks:
                score = text_scores.toxicity if check == "toxicity" else (text_scores.bias or 0.0)
                decision = action if score >= limits[check] else "pass"
                verdicts.append(CheckVerdict(check, score, decision))
                _DECISION_COUNTERS[check, decision].inc()
            out.append((text_scores, verdicts))
        GUARD_LATENCY.observe(time.perf_counter() - started)
        if record and self._decisions is not None:
            self._decisions.add(_rows(context, out))
        return out

    def close(self, timeout: float = 5.0) -> None:
        """Answers the queued requests, stops the batcher, writes the buffered decisions and stops the
        classifier the service started itself."""
        self._batcher.shutdown(timeout)
        if self._decisions is not None:
            self._decisions.close(timeout)
        close_classifier(self._owned_classifier)


def _observe_batch(size: int, seconds: float) -> None:
    GUARD_BATCH_TEXTS.observe(size)
    GUARD_BATCH_SECONDS.observe(seconds)


def _rows(context: RequestContext, out: list[tuple[TextScores, list[CheckVerdict]]]) -> list[GuardDecision]:
    now = datetime.now(timezone.utc)
    return [
        GuardDecision(
            project_id=context.project_id,
            timestamp=now,
            trace_id=context.trace_id,
            span_id=context.span_id,
            service_name=context.service_name,
            environment=context.environment,
            request_model=context.request_model,
            target=context.target,
            check=verdict.check,
            decision=verdict.decision,
            score=verdict.score,
            source="collector",
        )
        for _, verdicts in out
        for verdict in verdicts
    ]
