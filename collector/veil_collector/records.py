"""Records that pass between the collector's stages.

The ingest path (receiver -> spool -> store) produces :class:`GenAICall` for every stored GenAI span;
the classifier stage turns them into :class:`Evaluation`; the PII pass produces :class:`PiiFinding`;
guardrails produce :class:`GuardDecision`. Alert rules consume all three through :class:`EventSink`.
Each record maps one to one onto a row of the ClickHouse table of the same name (see
``store/migrations``); ``as_row()`` returns the values in ``COLUMNS`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol


@dataclass(frozen=True, slots=True)
class GenAICall:
    """A stored GenAI span with its (already scrubbed) prompt and response text, ready to classify."""

    project_id: str
    trace_id: str
    span_id: str
    timestamp: datetime
    service_name: str
    environment: str
    request_model: str
    input_text: str
    output_text: str
    user_id: str = ""
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One classifier score for one text of one span (a ``gen_ai.evaluation.result``)."""

    TABLE: ClassVar[str] = "evaluations"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "ProjectId", "Timestamp", "EvaluatedAt", "TraceId", "SpanId", "ServiceName", "Environment",
        "RequestModel", "Target", "Evaluator", "Label", "Score", "ModelName", "ModelVersion", "Explanation",
    )  # fmt: skip

    project_id: str
    timestamp: datetime
    evaluated_at: datetime
    trace_id: str
    span_id: str
    service_name: str
    environment: str
    request_model: str
    target: str  # "input" | "output"
    evaluator: str  # "toxicity" | "identity" | "bias" | ...
    label: str
    score: float
    model_name: str
    model_version: str
    explanation: str = ""

    def as_row(self) -> tuple:
        return astuple(self)


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """How many entities of one type one detector found in one place of one span. Never the values."""

    TABLE: ClassVar[str] = "pii_findings"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "ProjectId", "Timestamp", "TraceId", "SpanId", "ServiceName", "EntityType", "Count", "Detector",
        "Location", "Source", "SdkScrubbed", "SdkMissed", "VeilBatch",
    )  # fmt: skip

    project_id: str
    timestamp: datetime
    trace_id: str
    span_id: str
    service_name: str
    entity_type: str
    count: int
    detector: str  # "pattern" | "ner" | a recognizer name
    location: str  # "input" | "output" | "attribute"
    source: str  # "sdk" | "server"
    sdk_scrubbed: bool
    sdk_missed: bool
    veil_batch: int = 0

    def as_row(self) -> tuple:
        return astuple(self)


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """One guardrail check's decision on one text."""

    TABLE: ClassVar[str] = "guard_decisions"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "ProjectId", "Timestamp", "TraceId", "SpanId", "ServiceName", "Environment", "RequestModel",
        "Target", "Check", "Decision", "Score", "Source", "VeilBatch",
    )  # fmt: skip

    project_id: str
    timestamp: datetime
    trace_id: str
    span_id: str
    service_name: str
    environment: str
    request_model: str
    target: str  # "input" | "output"
    check: str
    decision: str  # "pass" | "block" | "redact" | "flag"
    score: float
    source: str  # "sdk" | "collector"
    veil_batch: int = 0

    def as_row(self) -> tuple:
        return astuple(self)


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What one drained spool batch wrote: handed to the stages after ClickHouse acknowledged it."""

    calls: Sequence[GenAICall] = field(default_factory=tuple)
    pii_findings: Sequence[PiiFinding] = field(default_factory=tuple)
    guard_decisions: Sequence[GuardDecision] = field(default_factory=tuple)


class EventSink(Protocol):
    """Receives single records as they are stored (alert event rules implement this).

    Called on a pipeline worker thread; implementations must be quick and must not raise.
    """

    def on_evaluations(self, evaluations: Sequence[Evaluation]) -> None: ...

    def on_pii_findings(self, findings: Sequence[PiiFinding]) -> None: ...

    def on_guard_decisions(self, decisions: Sequence[GuardDecision]) -> None: ...
