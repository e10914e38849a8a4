"""Row factories for the read-side tests: rows in exactly the shape the migrations define."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

# Recent enough that the tables' TTL (30 days) keeps the rows; whole minutes keep the arithmetic exact.
T0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=3)

SPAN_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
    "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId",
    "Links.TraceState", "Links.Attributes", "ProjectId",
)  # fmt: skip

CALL_COLUMNS = (
    "ProjectId", "Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "Duration", "ServiceName",
    "Environment", "Operation", "Provider", "RequestModel", "ResponseModel", "InputTokens", "OutputTokens",
    "CostUsd", "StatusCode", "ErrorType", "FinishReasons", "TimeToFirstChunk", "UserId", "SessionId", "Tags",
    "VeilBatch",
)  # fmt: skip


def trace_id(n: int) -> str:
    return f"{n:032x}"


def span_id(n: int) -> str:
    return f"{n:016x}"


def span_row(
    *,
    trace: str,
    span: str,
    parent: str = "",
    name: str = "work",
    at: datetime = T0,
    duration_ms: float = 10.0,
    service: str = "svc",
    status: str = "Unset",
    message: str = "",
    attributes: dict[str, str] | None = None,
    project: str = "p1",
    events: list[tuple[datetime, str, dict[str, str]]] = (),
) -> tuple[Any, ...]:
    return (
        at, trace, span, parent, "", name, "Internal", service,
        {"service.name": service}, "veil", "0.1.0", attributes or {}, round(duration_ms * 1_000_000),
        status, message, [e[0] for e in events], [e[1] for e in events], [e[2] for e in events],
        [], [], [], [], project,
    )  # fmt: skip


def call_row(
    *,
    trace: str,
    span: str,
    model: str,
    at: datetime = T0,
    duration_ms: float = 100.0,
    input_tokens: int = 10,
    output_tokens: int = 20,
    cost: float | None = 0.001,
    status: str = "Unset",
    service: str = "svc",
    provider: str = "openai",
    project: str = "p1",
    operation: str = "chat",
) -> tuple[Any, ...]:
    return (
        project, at, trace, span, "", f"{operation} {model}", round(duration_ms * 1_000_000), service, "test",
        operation, provider, model, model, input_tokens, output_tokens, cost, status, "", ["stop"], 0.0,
        "", "", [], 0,
    )  # fmt: skip


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
