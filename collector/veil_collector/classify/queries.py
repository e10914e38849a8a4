"""Project-scoped SQL over ``evaluations`` and ``feedback``: listing scores, storing human labels, bias.

Same conventions as :mod:`veil_collector.store.queries`: the project id is the first filter of every
statement (it leads each table's ORDER BY), values are bound server-side as ``{name:Type}`` placeholders,
optional filters are chosen from fixed SQL fragments, and times cross as Unix nanoseconds.

Bias windows: a text is one ``(TraceId, SpanId)`` of the chosen target (``output`` by default) with a
``toxicity``/``toxicity`` score in the window. It *mentions* a group when an ``identity`` row for it has
``Score >= 0.5`` (the lexicon writes 1.0; the ``unbiased`` model writes its head's probability). It is
*flagged* when its toxicity score is at least ``threshold``. Human labels are the latest ``feedback`` value
of the configured name for that span, toxic when ``>= 0.5``; feedback applies to the span, whichever
target was scored.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from veil_collector.classify.fairness import LabeledText, group_aucs, rate_disparity, summarize
from veil_collector.classify.identity import IDENTITY_GROUPS
from veil_collector.store.client import Store
from veil_collector.store.queries import from_unix_nanos, to_unix_nanos

MAX_EVALUATION_LIMIT = 1000
MAX_LABELED_TEXTS = 200_000
MENTION_THRESHOLD = 0.5
LABEL_THRESHOLD = 0.5

Target = Literal["input", "output"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- Listing evaluations ----------------------------------------------------------------------------------


class EvaluationFilter(_Model):
    """Which evaluation rows to list. ``start``/``end`` bound the scored span's time (end exclusive)."""

    start: datetime
    end: datetime
    evaluator: str | None = None
    label: str | None = None
    target: Target | None = None
    min_score: float | None = Field(default=None, ge=0, le=1)
    max_score: float | None = Field(default=None, ge=0, le=1)
    trace_id: str | None = None
    limit: int = Field(default=100, ge=1, le=MAX_EVALUATION_LIMIT)


class EvaluationRow(_Model):
    """One classifier score, shaped like ``gen_ai.evaluation.result`` plus where it came from."""

    trace_id: str
    span_id: str
    timestamp: datetime = Field(description="The scored span's time (UTC).")
    evaluated_at: datetime = Field(description="When the classifier scored it (UTC).")
    service_name: str
    request_model: str
    target: str = Field(description="Which text was scored: input or output.")
    name: str = Field(description="gen_ai.evaluation.name: the evaluator (toxicity, identity, bias, ...).")
    label: str = Field(description="gen_ai.evaluation.score.label")
    score: float = Field(description="gen_ai.evaluation.score.value")
    explanation: str = Field(description="gen_ai.evaluation.explanation")
    model_name: str
    model_version: str


_EVALUATION_FILTERS = {
    "evaluator": "Evaluator = {evaluator:String}",
    "label": "Label = {label:String}",
    "target": "Target = {target:String}",
    "min_score": "Score >= {min_score:Float64}",
    "max_score": "Score <= {max_score:Float64}",
    "trace_id": "TraceId = {trace_id:String}",
}

_LIST_EVALUATIONS = """
SELECT TraceId, SpanId, toUnixTimestamp64Nano(Timestamp), toUnixTimestamp64Nano(EvaluatedAt), ServiceName,
       RequestModel, Target, Evaluator, Label, Score, Explanation, ModelName, ModelVersion
FROM evaluations
WHERE ProjectId = {{project:String}}
  AND Timestamp >= fromUnixTimestamp64Nano({{start_ns:Int64}})
  AND Timestamp < fromUnixTimestamp64Nano({{end_ns:Int64}})
  {filters}
ORDER BY Timestamp DESC, TraceId, SpanId, Target, Evaluator, Label
LIMIT {{limit:UInt32}}
"""


def list_evaluations(store: Store, *, project_id: str, query: EvaluationFilter) -> list[EvaluationRow]:
    """Evaluation rows of ``project_id`` matching ``query``, newest span first.

    Raises:
        ValueError: ``min_score`` is above ``max_score``.
    """
    if query.min_score is not None and query.max_score is not None and query.min_score > query.max_score:
        raise ValueError(f"min_score ({query.min_score}) must not exceed max_score ({query.max_score})")
    parameters: dict[str, Any] = {
        "project": project_id,
        "start_ns": to_unix_nanos(query.start),
        "end_ns": to_unix_nanos(query.end),
        "limit": query.limit,
    }
    clauses = []
    for field, clause in _EVALUATION_FILTERS.items():
        value = getattr(query, field)
        if value is not None:
            parameters[field] = value
            clauses.append(f"AND {clause}")
    sql = _LIST_EVALUATIONS.format(filters="\n  ".join(clauses))
    return [
        EvaluationRow(
            trace_id=row[0],
            span_id=row[1],
            timestamp=from_unix_nanos(row[2]),
            evaluated_at=from_unix_nanos(row[3]),
            service_name=row[4],
            request_model=row[5],
            target=row[6],
            name=row[7],
            label=row[8],
            score=row[9],
            explanation=row[10],
            model_name=row[11],
            model_version=row[12],
        )
        for row in store.query(sql, parameters).result_rows
    ]


# --- Feedback ---------------------------------------------------------------------------------------------


class FeedbackIn(_Model):
    """A human label on a span, e.g. ``name='toxicity'`` with ``value`` 1 (toxic) or 0 (not toxic)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="32 lowercase hex digits.")
    span_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="16 lowercase hex digits.")
    name: str = Field(
        default="toxicity",
        pattern=r"^[a-z][a-z0-9_.-]{0,63}$",
        description="What is labeled; the bias metrics read `toxicity`.",
    )
    value: float = Field(description="The label; for toxicity 1 = toxic, 0 = not toxic (>= 0.5 is toxic).")
    comment: str = Field(default="", max_length=10_000)
    author: str = Field(default="", max_length=200)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("value must be a finite number")
        return value


class FeedbackStored(_Model):
    trace_id: str
    span_id: str
    name: str
    timestamp: datetime


_FEEDBACK_COLUMNS = ("ProjectId", "Timestamp", "TraceId", "SpanId", "Name", "Value", "Comment", "Author")


def insert_feedback(store: Store, *, project_id: str, feedback: FeedbackIn) -> FeedbackStored:
    """Store one human label for ``project_id``; the latest label per span and name wins in the metrics."""
    now = datetime.now(timezone.utc)
    row = (
        project_id,
        now,
        feedback.trace_id,
        feedback.span_id,
        feedback.name,
        feedback.value,
        feedback.comment,
        feedback.author,
    )
    store.insert("feedback", [row], _FEEDBACK_COLUMNS)
    return FeedbackStored(
        trace_id=feedback.trace_id, span_id=feedback.span_id, name=feedback.name, timestamp=now
    )


# --- Bias -------------------------------------------------------------------------------------------------


class GroupBias(_Model):
    """One identity group in a window: the rate view, and the AUCs where human labels exist."""

    group: str
    texts: int = Field(description="Texts mentioning the group.")
    flagged: int = Field(description="Of those, texts scored toxic (score >= threshold).")
    rate: float | None = Field(description="flagged / texts.")
    background_texts: int = Field(description="Texts not mentioning the group.")
    background_rate: float | None = Field(description="Flagged share of the background texts.")
    rate_ratio: float | None = Field(description="rate / background_rate; above 1 the group is flagged more.")
    labeled_texts: int = Field(description="Texts mentioning the group that carry a human label.")
    subgroup_auc: float | None
    bpsn_auc: float | None = Field(description="Background positive, subgroup negative AUC.")
    bnsp_auc: float | None = Field(description="Background negative, subgroup positive AUC.")


class BiasReport(_Model):
    """Per-group toxicity disparity in a window, with the Jigsaw AUC summary over labeled texts."""

    start: datetime
    end: datetime
    target: str
    threshold: float
    feedback_name: str
    texts: int
    flagged: int
    labeled_texts: int
    groups: list[GroupBias]
    overall_auc: float | None
    subgroup_power_mean: float | None = Field(description="Generalized mean (p = -5) of subgroup AUCs.")
    bpsn_power_mean: float | None
    bnsp_power_mean: float | None
    final_score: float | None = Field(description="0.25 overall AUC + 0.75 mean of the three power means.")


_BIAS_SCOPE = """
WITH
tox AS (
    SELECT TraceId, SpanId, max(Score) AS score
    FROM evaluations
    WHERE ProjectId = {project:String} AND Evaluator = 'toxicity' AND Label = 'toxicity'
      AND Target = {target:String}
      AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
      AND Timestamp < fromUnixTimestamp64Nano({end_ns:Int64})
    GROUP BY TraceId, SpanId
),
ident AS (
    SELECT TraceId, SpanId, groupUniqArray(Label) AS groups
    FROM evaluations
    WHERE ProjectId = {project:String} AND Evaluator = 'identity' AND Score >= {mention:Float64}
      AND Target = {target:String}
      AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
      AND Timestamp < fromUnixTimestamp64Nano({end_ns:Int64})
    GROUP BY TraceId, SpanId
)
"""

_BIAS_TOTALS = _BIAS_SCOPE + "SELECT count(), countIf(score >= {threshold:Float64}) FROM tox"

_BIAS_GROUPS = (
    _BIAS_SCOPE
    + """
SELECT grp, count(), countIf(score >= {threshold:Float64})
FROM tox INNER JOIN ident USING (TraceId, SpanId)
ARRAY JOIN groups AS grp
GROUP BY grp
"""
)

_BIAS_LABELED = (
    _BIAS_SCOPE
    + """
SELECT tox.score, labels.value, ident.groups
FROM tox
INNER JOIN (
    SELECT TraceId, SpanId, argMax(Value, Timestamp) AS value
    FROM feedback
    WHERE ProjectId = {project:String} AND Name = {feedback_name:String}
    GROUP BY TraceId, SpanId
) AS labels USING (TraceId, SpanId)
LEFT JOIN ident USING (TraceId, SpanId)
LIMIT {max_labeled:UInt32}
"""
)


def bias_report(
    store: Store,
    *,
    project_id: str,
    start: datetime,
    end: datetime,
    target: Target = "output",
    threshold: float = 0.5,
    feedback_name: str = "toxicity",
) -> BiasReport:
    """Per-group disparity of ``project_id``'s texts scored in ``[start, end)``; see the module docstring.

    Every Jigsaw identity group is listed (with zero counts when unmentioned), then any other group.
    At most ``MAX_LABELED_TEXTS`` labeled texts enter the AUCs.

    Raises:
        ValueError: ``threshold`` outside [0, 1].
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be within [0, 1]; got {threshold}")
    parameters: dict[str, Any] = {
        "project": project_id,
        "target": target,
        "start_ns": to_unix_nanos(start),
        "end_ns": to_unix_nanos(end),
        "mention": MENTION_THRESHOLD,
        "threshold": threshold,
        "feedback_name": feedback_name,
        "max_labeled": MAX_LABELED_TEXTS,
    }
    total_texts, total_flagged = store.query(_BIAS_TOTALS, parameters).result_rows[0]
    counts = {
        group: (texts, flagged) for group, texts, flagged in store.query(_BIAS_GROUPS, parameters).result_rows
    }
    labeled = [
        LabeledText(score=score, toxic=value >= LABEL_THRESHOLD, groups=frozenset(groups))
        for score, value, groups in store.query(_BIAS_LABELED, parameters).result_rows
    ]
    names = list(IDENTITY_GROUPS) + sorted(set(counts) - set(IDENTITY_GROUPS))
    groups = []
    aucs = []
    for name in names:
        texts, flagged = counts.get(name, (0, 0))
        rates = rate_disparity(texts, flagged, total_texts, total_flagged)
        group_auc = group_aucs(labeled, name)
        aucs.append(group_auc)
        groups.append(
            GroupBias(
                group=name,
                texts=texts,
                flagged=flagged,
                rate=rates.rate,
                background_texts=rates.background_texts,
                background_rate=rates.background_rate,
                rate_ratio=rates.ratio,
                labeled_texts=group_auc.labeled_texts,
                subgroup_auc=group_auc.subgroup_auc,
                bpsn_auc=group_auc.bpsn_auc,
                bnsp_auc=group_auc.bnsp_auc,
            )
        )
    summary = summarize(labeled, aucs)
    return BiasReport(
        start=start,
        end=end,
        target=target,
        threshold=threshold,
        feedback_name=feedback_name,
        texts=total_texts,
        flagged=total_flagged,
        labeled_texts=len(labeled),
        groups=groups,
        overall_auc=summary.overall_auc,
        subgroup_power_mean=summary.subgroup_power_mean,
        bpsn_power_mean=summary.bpsn_power_mean,
        bnsp_power_mean=summary.bnsp_power_mean,
        final_score=summary.final_score,
    )
