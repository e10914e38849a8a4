"""Every read query of the query API: trace lists, one trace's span tree, and usage statistics.

Every query takes the caller's project id and filters on it first (it leads the ORDER BY of each table),
so one project can never read another's rows. Every value is bound server-side as a ``{name:Type}``
placeholder; the SQL text is fixed, with optional filters chosen from fixed fragments. Times cross the
boundary as Unix nanoseconds (``Int64``), never as formatted strings, so no time zone is ever guessed.
Results are typed (pydantic models that the API also serves as its response models).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from veil import semconv
from veil_collector.store.client import Store

# The OpenTelemetry Collector ClickHouse exporter's spelling of span status codes (StatusCodeStr).
STATUS_ERROR = "Error"
MAX_TRACE_LIMIT = 1000
# A classifier score at or above this counts as "flagged" in the statistics.
FLAG_THRESHOLD = 0.5
_NS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

TraceStatus = Literal["ok", "error"]


class InvalidCursor(ValueError):
    """A pagination cursor that this API did not produce (or that was altered)."""


# --- Result types -----------------------------------------------------------------------------------------


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class TraceSummary(_Result):
    """One trace in a trace list."""

    trace_id: str
    start: datetime = Field(description="Start of the earliest span of the trace in the window (UTC).")
    duration_ms: float = Field(description="From the earliest span start to the latest span end.")
    root_span_name: str = Field(description="The root span's name (the earliest span's if no root arrived).")
    service_name: str
    span_count: int
    error_count: int = Field(description="Spans with status Error.")
    status: TraceStatus
    models: list[str] = Field(description="Request models named by the trace's GenAI spans.")
    user_id: str | None
    session_id: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(description="Sum over priced calls; null when no call had a price.")


class TracePage(_Result):
    """A page of traces, newest first."""

    traces: list[TraceSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class EvaluationResult(_Result):
    """A classifier score on a span, shaped like the ``gen_ai.evaluation.result`` event."""

    name: str = Field(description="gen_ai.evaluation.name: the evaluator (toxicity, identity, bias, ...).")
    score: float = Field(description="gen_ai.evaluation.score.value")
    label: str = Field(description="gen_ai.evaluation.score.label")
    explanation: str = Field(description="gen_ai.evaluation.explanation")
    target: str = Field(description="Which text was scored: input or output.")
    model: str = Field(description="The model (and version) that produced the score.")


class PiiCount(_Result):
    """How many entities of one type were found in one place of a span (values are never stored)."""

    entity_type: str
    count: int
    location: str
    source: str = Field(description="sdk (reported by the sender) or server (the collector's own pass).")


class SpanEvent(_Result):
    time: datetime
    name: str
    attributes: dict[str, str]


class SpanNode(_Result):
    """One span of a trace with its children, in start order."""

    span_id: str
    parent_span_id: str
    name: str
    kind: str
    service_name: str
    start: datetime
    duration_ms: float
    status: str = Field(description="Unset, Ok or Error.")
    status_message: str
    attributes: dict[str, str]
    resource_attributes: dict[str, str]
    events: list[SpanEvent]
    cost_usd: float | None = Field(description="For GenAI calls with a known price; null otherwise.")
    evaluations: list[EvaluationResult]
    pii_findings: list[PiiCount]
    children: list[SpanNode]


class TraceDetail(_Result):
    """A trace as a span tree. Spans whose parent never arrived are listed as extra roots."""

    trace_id: str
    start: datetime
    duration_ms: float
    span_count: int
    spans: list[SpanNode] = Field(description="The root spans, each with its descendants.")


class LatencyMs(_Result):
    p50: float | None
    p95: float | None
    p99: float | None


class ModelStats(_Result):
    """GenAI calls of one model over the window."""

    model: str
    provider: str
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(description="Sum over priced calls; null when the model has no price.")
    unpriced_calls: int
    latency_ms: LatencyMs


class PiiStats(_Result):
    entity_type: str
    source: str
    count: int


class EvaluationStats(_Result):
    """Classifier scores of one evaluator and label over the window."""

    name: str = Field(description="The evaluator (gen_ai.evaluation.name): toxicity, identity, bias, ...")
    label: str
    scored: int = Field(description="Texts scored.")
    flagged: int = Field(description=f"Texts scoring at least {FLAG_THRESHOLD}.")
    max_score: float


class Stats(_Result):
    """Counts, model-call latency, tokens and cost, PII findings and classifier scores over a window."""

    start: datetime
    end: datetime
    traces: int
    spans: int
    error_spans: int
    llm_calls: int = Field(description="Model calls (chat, completions, embeddings); not tools or agents.")
    llm_errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(description="Sum over priced calls; null when no call had a price.")
    unpriced_calls: int = Field(description="Calls to models without a price (their cost is unknown).")
    latency_ms: LatencyMs = Field(description="Latency of model calls.")
    by_model: list[ModelStats]
    pii_findings: list[PiiStats]
    pii_findings_total: int
    evaluations: list[EvaluationStats]


# --- Filters and cursors ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """What ``list_traces`` selects. ``start``/``end`` bound the span start times (end exclusive)."""

    start: datetime
    end: datetime
    service: str | None = None
    model: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    status: TraceStatus | None = None
    min_duration_ms: float | None = None
    limit: int = 50
    cursor: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_TRACE_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_TRACE_LIMIT}, got {self.limit}")
        if to_unix_nanos(self.end) <= to_unix_nanos(self.start):
            raise ValueError(f"the window's end ({self.end.isoformat()}) must be after its start")
        if self.min_duration_ms is not None and (
            not math.isfinite(self.min_duration_ms) or self.min_duration_ms < 0
        ):
            raise ValueError(f"min_duration_ms must be a finite number >= 0, got {self.min_duration_ms}")


def encode_cursor(start_ns: int, trace_id: str) -> str:
    """An opaque keyset cursor: the position after the trace that started at ``start_ns``."""
    raw = json.dumps([start_ns, trace_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The position a cursor stands for.

    Raises:
        InvalidCursor: the cursor was not produced by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        start_ns, trace_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor("cursor is not one this API returned; start again without it") from exc
    if type(start_ns) is not int or not isinstance(trace_id, str):
        raise InvalidCursor("cursor is not one this API returned; start again without it")
    return start_ns, trace_id


def to_unix_nanos(moment: datetime) -> int:
    """Nanoseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def from_unix_nanos(nanos: int) -> datetime:
    """A UTC datetime (microsecond precision, truncated) from nanoseconds since the epoch."""
    # Integer arithmetic: a float of seconds cannot hold today's times to the microsecond.
    return _EPOCH + timedelta(microseconds=nanos // 1_000)


# --- Trace list -------------------------------------------------------------------------------------------

# The attribute names the queries read, bound as parameters like every other value.
_ATTRIBUTE_PARAMETERS = {
    "a_user": semconv.USER_ID,
    "a_session": semconv.SESSION_ID,
    "a_conversation": semconv.GEN_AI_CONVERSATION_ID,
    "a_request_model": semconv.GEN_AI_REQUEST_MODEL,
}

# Two steps, so that the wide SpanAttributes map is read only where it must be: the page is chosen from
# narrow columns over the whole window (the map is read only for the filters that need it), then the
# page's at most ``limit`` traces are described from their spans alone (TraceId has a bloom filter index).
_PAGE_TRACES = """
SELECT
    TraceId,
    min(toUnixTimestamp64Nano(Timestamp)) AS start_ns,
    max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) AS end_ns,
    count() AS span_count,
    countIf(StatusCode = {status_error:String}) AS error_count
FROM otel_traces
WHERE ProjectId = {project:String}
  AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({end_ns:Int64})
  AND {where}
GROUP BY TraceId
HAVING {having}
ORDER BY start_ns DESC, TraceId DESC
LIMIT {limit:UInt32}
"""

_DESCRIBE_TRACES = """
SELECT
    TraceId,
    if(countIf(ParentSpanId = '') > 0, argMinIf(SpanName, Timestamp, ParentSpanId = ''),
       argMin(SpanName, Timestamp)) AS root_name,
    if(countIf(ParentSpanId = '') > 0, argMinIf(ServiceName, Timestamp, ParentSpanId = ''),
       argMin(ServiceName, Timestamp)) AS root_service,
    arraySort(groupUniqArrayIf(SpanAttributes[{a_request_model:String}],
                               SpanAttributes[{a_request_model:String}] != '')) AS models,
    anyIf(SpanAttributes[{a_user:String}], SpanAttributes[{a_user:String}] != '') AS user_id,
    anyIf(if(SpanAttributes[{a_session:String}] != '', SpanAttributes[{a_session:String}],
             SpanAttributes[{a_conversation:String}]),
          SpanAttributes[{a_session:String}] != '' OR SpanAttributes[{a_conversation:String}] != '')
        AS session_id
FROM otel_traces
WHERE ProjectId = {project:String}
  AND TraceId IN {trace_ids:Array(String)}
  AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({end_ns:Int64})
GROUP BY TraceId
"""

_HAVING_FRAGMENTS = {
    "service": "countIf(ServiceName = {service:String}) > 0",
    "user_id": "countIf(SpanAttributes[{a_user:String}] = {user_id:String}) > 0",
    "session_id": "countIf(SpanAttributes[{a_session:String}] = {session_id:String}"
    " OR SpanAttributes[{a_conversation:String}] = {session_id:String}) > 0",
    "min_duration_ns": "end_ns - start_ns >= {min_duration_ns:Int64}",
    "cursor": "(start_ns, TraceId) < ({cursor_ns:Int64}, {cursor_trace:String})",
}

# The model filter reads the typed llm_calls table (RequestModel leads its sort key after the service)
# rather than every span's attribute map.
_WHERE_MODEL = """TraceId IN (
    SELECT TraceId FROM llm_calls
    WHERE ProjectId = {project:String} AND (RequestModel = {model:String} OR ResponseModel = {model:String})
      AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
      AND Timestamp < fromUnixTimestamp64Nano({end_ns:Int64}))"""

_TRACE_USAGE = """
SELECT TraceId, sum(InputTokens), sum(OutputTokens), sum(CostUsd)
FROM llm_calls
WHERE ProjectId = {project:String} AND TraceId IN {trace_ids:Array(String)}
  AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
GROUP BY TraceId
"""


def list_traces(store: Store, *, project_id: str, query: TraceFilter) -> TracePage:
    """Traces of ``project_id`` with spans starting in the window, newest first, filtered and paged.

    A trace matches a filter when any of its spans in the window does (service, user, session) or any of
    its GenAI calls does (model: the request or response model);
    ``status="error"`` selects traces with at least one failed span, ``"ok"`` those with none.

    Raises:
        InvalidCursor: ``query.cursor`` is not a cursor this API returned.
    """
    parameters: dict[str, Any] = {
        **_ATTRIBUTE_PARAMETERS,
        "project": project_id,
        "start_ns": to_unix_nanos(query.start),
        "end_ns": to_unix_nanos(query.end),
        "status_error": STATUS_ERROR,
        "limit": query.limit + 1,  # one more than asked tells whether another page exists
    }
    where, having = ["1"], ["1"]
    if query.model is not None:
        where.append(_WHERE_MODEL)
        parameters["model"] = query.model
    for name in ("service", "user_id", "session_id"):
        value = getattr(query, name)
        if value is not None:
            having.append(_HAVING_FRAGMENTS[name])
            parameters[name] = value
    if query.min_duration_ms is not None:
        having.append(_HAVING_FRAGMENTS["min_duration_ns"])
        parameters["min_duration_ns"] = round(query.min_duration_ms * _NS_PER_MS)
    if query.status == "error":
        having.append("error_count > 0")
    elif query.status == "ok":
        having.append("error_count = 0")
    if query.cursor is not None:
        parameters["cursor_ns"], parameters["cursor_trace"] = decode_cursor(query.cursor)
        having.append(_HAVING_FRAGMENTS["cursor"])

    # WHERE and HAVING are assembled from the fixed fragments above only; every value is a placeholder.
    sql = _PAGE_TRACES.replace("{where}", " AND ".join(where)).replace("{having}", " AND ".join(having))
    rows = store.query(sql, parameters).result_rows
    page, more = rows[: query.limit], len(rows) > query.limit
    trace_ids = [row[0] for row in page]

    described = {}
    if trace_ids:
        result = store.query(_DESCRIBE_TRACES, {**parameters, "trace_ids": trace_ids})
        described = {row[0]: row[1:] for row in result.result_rows}
    usage = _trace_usage(store, project_id, trace_ids, parameters["start_ns"])
    traces = []
    for trace_id, start_ns, end_ns, spans, errors in page:
        root, service, models, user, session = described[trace_id]
        input_tokens, output_tokens, cost = usage.get(trace_id, (0, 0, None))
        traces.append(
            TraceSummary(
                trace_id=trace_id,
                start=from_unix_nanos(start_ns),
                duration_ms=(end_ns - start_ns) / _NS_PER_MS,
                root_span_name=root,
                service_name=service,
                span_count=spans,
                error_count=errors,
                status="error" if errors else "ok",
                models=list(models),
                user_id=user or None,
                session_id=session or None,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost,
            )
        )
    next_cursor = encode_cursor(page[-1][1], page[-1][0]) if more else None
    return TracePage(traces=traces, next_cursor=next_cursor)


def _trace_usage(
    store: Store, project_id: str, trace_ids: Sequence[str], start_ns: int
) -> dict[str, tuple[int, int, float | None]]:
    if not trace_ids:
        return {}
    result = store.query(
        _TRACE_USAGE, {"project": project_id, "trace_ids": list(trace_ids), "start_ns": start_ns}
    )
    return {trace_id: (int(inp), int(out), cost) for trace_id, inp, out, cost in result.result_rows}


# --- One trace --------------------------------------------------------------------------------------------

_TRACE_RANGE = """
SELECT toUnixTimestamp64Nano(min(Start)), toUnixTimestamp64Nano(max(End))
FROM otel_traces_trace_id_ts
WHERE TraceId = {trace_id:String} AND ProjectId = {project:String}
HAVING count() > 0
"""

_TRACE_SPANS = """
SELECT SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, toUnixTimestamp64Nano(Timestamp), Duration,
       StatusCode, StatusMessage, SpanAttributes, ResourceAttributes,
       arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp), Events.Name, Events.Attributes
FROM otel_traces
WHERE ProjectId = {project:String} AND TraceId = {trace_id:String}
  AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
  AND Timestamp <= fromUnixTimestamp64Nano({end_ns:Int64})
ORDER BY Timestamp, SpanId
LIMIT 1 BY SpanId
"""

_SPAN_COSTS = """
SELECT SpanId, any(CostUsd)
FROM llm_calls
WHERE ProjectId = {project:String} AND TraceId = {trace_id:String}
  AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
  AND Timestamp <= fromUnixTimestamp64Nano({end_ns:Int64})
GROUP BY SpanId
"""

_SPAN_EVALUATIONS = """
SELECT SpanId, Evaluator, Score, Label, Explanation, Target,
       if(ModelVersion = '', ModelName, concat(ModelName, '@', ModelVersion))
FROM evaluations
WHERE ProjectId = {project:String} AND TraceId = {trace_id:String}
ORDER BY SpanId, Evaluator, Target, Label
"""

_SPAN_PII = """
SELECT SpanId, EntityType, sum(Count), Location, Source
FROM pii_findings
WHERE ProjectId = {project:String} AND TraceId = {trace_id:String}
GROUP BY SpanId, EntityType, Location, Source
ORDER BY SpanId, EntityType, Location, Source
"""


def get_trace(store: Store, *, project_id: str, trace_id: str) -> TraceDetail | None:
    """The span tree of one trace of ``project_id``; None when that project has no such trace."""
    bounds = store.query(_TRACE_RANGE, {"trace_id": trace_id, "project": project_id}).result_rows
    if not bounds:
        return None
    start_ns, end_ns = bounds[0]
    parameters = {"project": project_id, "trace_id": trace_id, "start_ns": start_ns, "end_ns": end_ns}
    span_rows = store.query(_TRACE_SPANS, parameters).result_rows
    if not span_rows:
        return None
    costs = dict(store.query(_SPAN_COSTS, parameters).result_rows)
    evaluations: dict[str, list[EvaluationResult]] = {}
    for span_id, name, score, label, explanation, target, model in store.query(
        _SPAN_EVALUATIONS, parameters
    ).result_rows:
        evaluations.setdefault(span_id, []).append(
            EvaluationResult(
                name=name, score=score, label=label, explanation=explanation, target=target, model=model
            )
        )
    pii: dict[str, list[PiiCount]] = {}
    for span_id, entity_type, count, location, source in store.query(_SPAN_PII, parameters).result_rows:
        pii.setdefault(span_id, []).append(
            PiiCount(entity_type=entity_type, count=count, location=location, source=source)
        )
    spans = [_span_fields(row, costs, evaluations, pii) for row in span_rows]
    roots = _build_tree(spans)
    first = min(span["start_ns"] for span in spans)
    last = max(span["start_ns"] + span["duration_ns"] for span in spans)
    return TraceDetail(
        trace_id=trace_id,
        start=from_unix_nanos(first),
        duration_ms=(last - first) / _NS_PER_MS,
        span_count=len(spans),
        spans=roots,
    )


def _span_fields(
    row: Sequence[Any],
    costs: dict[str, float | None],
    evaluations: dict[str, list[EvaluationResult]],
    pii: dict[str, list[PiiCount]],
) -> dict[str, Any]:
    (span_id, parent, name, kind, service, start_ns, duration, status, message, attributes, resource,
     event_times, event_names, event_attributes) = row  # fmt: skip
    return {
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": kind,
        "service_name": service,
        "start_ns": start_ns,
        "duration_ns": duration,
        "status": status,
        "status_message": message,
        "attributes": dict(attributes),
        "resource_attributes": dict(resource),
        "events": [
            SpanEvent(time=from_unix_nanos(t), name=n, attributes=dict(a))
            for t, n, a in zip(event_times, event_names, event_attributes, strict=True)
        ],
        "cost_usd": costs.get(span_id),
        "evaluations": evaluations.get(span_id, []),
        "pii_findings": pii.get(span_id, []),
    }


def _build_tree(spans: Iterable[dict[str, Any]]) -> list[SpanNode]:
    """Nest spans under their parents, children in start order.

    Built bottom-up without recursion so deep traces cannot exhaust the stack. A span whose parent is
    absent (not yet arrived, or expired) becomes a root; so does a span caught in a parent cycle, which
    only hostile input can produce.
    """
    by_id = {span["span_id"]: span for span in spans}
    children: dict[str, list[str]] = {span_id: [] for span_id in by_id}
    roots: list[str] = []
    for span_id, span in by_id.items():
        parent = span["parent_span_id"]
        if parent and parent in by_id and parent != span_id:
            children[parent].append(span_id)
        else:
            roots.append(span_id)
    # Depth-first order from the roots; spans never reached sit in a cycle and are promoted to roots.
    order: list[str] = []
    reached: set[str] = set()
    pending = list(roots)
    while True:
        while pending:
            span_id = pending.pop()
            if span_id in reached:
                continue
            reached.add(span_id)
            order.append(span_id)
            pending.extend(children[span_id])
        unreached = [span_id for span_id in by_id if span_id not in reached]
        if not unreached:
            break
        cycle_root = min(unreached, key=lambda s: (by_id[s]["start_ns"], s))
        roots.append(cycle_root)
        children[by_id[cycle_root]["parent_span_id"]].remove(cycle_root)
        pending.append(cycle_root)
    nodes: dict[str, SpanNode] = {}
    for span_id in reversed(order):  # children are complete before their parent is built
        span = by_id[span_id]
        kids = sorted((nodes[kid] for kid in children[span_id]), key=lambda n: (n.start, n.span_id))
        nodes[span_id] = SpanNode(
            span_id=span_id,
            parent_span_id=span["parent_span_id"],
            name=span["name"],
            kind=span["kind"],
            service_name=span["service_name"],
            start=from_unix_nanos(span["start_ns"]),
            duration_ms=span["duration_ns"] / _NS_PER_MS,
            status=span["status"],
            status_message=span["status_message"],
            attributes=span["attributes"],
            resource_attributes=span["resource_attributes"],
            events=span["events"],
            cost_usd=span["cost_usd"],
            evaluations=span["evaluations"],
            pii_findings=span["pii_findings"],
            children=kids,
        )
    return sorted((nodes[root] for root in roots), key=lambda n: (n.start, n.span_id))


# --- Statistics -------------------------------------------------------------------------------------------

_TRAFFIC = """
SELECT uniqExact(TraceId), count(), countIf(StatusCode = {status_error:String})
FROM otel_traces
WHERE ProjectId = {project:String}
  AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({end_ns:Int64})
  AND ({service:Nullable(String)} IS NULL OR ServiceName = {service:Nullable(String)})
"""

# Aggregates and scope shared by the per-model and the overall model-call statistics. llm_calls also
# holds tool, agent and workflow spans (they carry gen_ai.operation.name); they call no model.
_ORCHESTRATION_OPERATIONS = [semconv.OP_EXECUTE_TOOL, semconv.OP_INVOKE_AGENT, semconv.OP_INVOKE_WORKFLOW]
_CALL_AGGREGATES = """
    any(Provider),
    count(),
    countIf(StatusCode = {status_error:String}),
    sum(InputTokens),
    sum(OutputTokens),
    sum(CostUsd),
    countIf(CostUsd IS NULL),
    quantilesExact(0.5, 0.95, 0.99)(Duration)
FROM llm_calls
WHERE ProjectId = {project:String}
  AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({end_ns:Int64})
  AND ({service:Nullable(String)} IS NULL OR ServiceName = {service:Nullable(String)})
  AND Operation NOT IN {orchestration:Array(String)}
"""
_CALLS_BY_MODEL = (
    "SELECT if(RequestModel != '', RequestModel, ResponseModel) AS model,"
    + _CALL_AGGREGATES
    + "GROUP BY model ORDER BY count() DESC, model"
)
_CALLS_TOTAL = "SELECT '' AS model," + _CALL_AGGREGATES

_PII_TOTALS = """
SELECT EntityType, Source, sum(Count)
FROM pii_findings
WHERE ProjectId = {project:String}
  AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({end_ns:Int64})
  AND ({service:Nullable(String)} IS NULL OR ServiceName = {service:Nullable(String)})
GROUP BY EntityType, Source
ORDER BY sum(Count) DESC, EntityType, Source
"""


_EVALUATION_TOTALS = """
SELECT Evaluator, Label, count(), countIf(Score >= {flag:Float32}), max(Score)
FROM evaluations
WHERE ProjectId = {project:String}
  AND Timestamp >= fromUnixTimestamp64Nano({start_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({end_ns:Int64})
  AND ({service:Nullable(String)} IS NULL OR ServiceName = {service:Nullable(String)})
GROUP BY Evaluator, Label
ORDER BY Evaluator, Label
"""


def get_stats(
    store: Store, *, project_id: str, start: datetime, end: datetime, service: str | None = None
) -> Stats:
    """Usage statistics of ``project_id`` in [start, end).

    Traffic; model-call latency, tokens and cost, in total and by model; PII findings; classifier scores.

    Raises:
        ValueError: ``end`` is not after ``start``.
    """
    start_ns, end_ns = to_unix_nanos(start), to_unix_nanos(end)
    if end_ns <= start_ns:
        raise ValueError(f"the window's end ({end.isoformat()}) must be after its start")
    parameters = {
        "project": project_id,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "service": service,
        "status_error": STATUS_ERROR,
        "orchestration": _ORCHESTRATION_OPERATIONS,
        "flag": FLAG_THRESHOLD,
    }
    traces, spans, error_spans = store.query(_TRAFFIC, parameters).result_rows[0]
    by_model = [_model_stats(row) for row in store.query(_CALLS_BY_MODEL, parameters).result_rows]
    totals = _model_stats(store.query(_CALLS_TOTAL, parameters).result_rows[0])
    pii = [
        PiiStats(entity_type=entity, source=source, count=count)
        for entity, source, count in store.query(_PII_TOTALS, parameters).result_rows
    ]
    return Stats(
        start=from_unix_nanos(start_ns),
        end=from_unix_nanos(end_ns),
        traces=traces,
        spans=spans,
        error_spans=error_spans,
        llm_calls=totals.calls,
        llm_errors=totals.errors,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cost_usd=totals.cost_usd,
        unpriced_calls=totals.unpriced_calls,
        latency_ms=totals.latency_ms,
        by_model=by_model,
        pii_findings=pii,
        pii_findings_total=sum(item.count for item in pii),
        evaluations=[
            EvaluationStats(name=name, label=label, scored=scored, flagged=flagged, max_score=top)
            for name, label, scored, flagged, top in store.query(_EVALUATION_TOTALS, parameters).result_rows
        ],
    )


def _model_stats(row: Sequence[Any]) -> ModelStats:
    model, provider, calls, errors, input_tokens, output_tokens, cost, unpriced, quantiles = row
    # Over no calls ClickHouse answers 0 for every quantile; there is no latency to report.
    p50, p95, p99 = (q / _NS_PER_MS if calls else None for q in quantiles)
    return ModelStats(
        model=model,
        provider=provider,
        calls=calls,
        errors=errors,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost,
        unpriced_calls=unpriced,
        latency_ms=LatencyMs(p50=p50, p95=p95, p99=p99),
    )
