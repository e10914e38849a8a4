"""The read API: trace lists, one trace's span tree, and usage statistics of the caller's project.

Routes only translate HTTP to :mod:`veil_collector.store.queries` and back; the project comes from the
caller's API key (``ProjectDep``), so every answer is scoped to it. They are plain ``def`` functions:
the store client blocks, and FastAPI runs such routes on its thread pool instead of the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from veil_collector.api.deps import ProjectDep, StoreDep
from veil_collector.api.params import End, Start, resolve_window
from veil_collector.store import queries
from veil_collector.store.queries import (
    MAX_TRACE_LIMIT,
    InvalidCursor,
    Stats,
    TraceDetail,
    TraceFilter,
    TracePage,
    TraceStatus,
)

router = APIRouter(prefix="/api", tags=["query"])

Service = Annotated[str | None, Query(description="Only traces or calls of this `service.name`.")]


@router.get("/traces", response_model=TracePage, summary="List traces, newest first")
def list_traces(
    store: StoreDep,
    project_id: ProjectDep,
    start: Start = None,
    end: End = None,
    service: Service = None,
    model: Annotated[
        str | None,
        Query(description="Only traces with a GenAI call of this request or response model."),
    ] = None,
    user_id: Annotated[str | None, Query(description="Only traces with a span of this `user.id`.")] = None,
    session_id: Annotated[
        str | None,
        Query(description="Only traces with this `session.id` (or `gen_ai.conversation.id`)."),
    ] = None,
    trace_status: Annotated[
        TraceStatus | None,
        Query(alias="status", description="`error`: traces with a failed span; `ok`: traces without one."),
    ] = None,
    min_duration_ms: Annotated[
        float | None, Query(ge=0, description="Only traces lasting at least this many milliseconds.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TRACE_LIMIT, description="Traces per page.")] = 50,
    cursor: Annotated[
        str | None, Query(description="The `next_cursor` of the previous page; omit for the first page.")
    ] = None,
) -> TracePage:
    """Traces with spans starting in the window; a filter matches when any span of the trace matches."""
    start, end = resolve_window(start, end)
    query = TraceFilter(
        start=start,
        end=end,
        service=service,
        model=model,
        user_id=user_id,
        session_id=session_id,
        status=trace_status,
        min_duration_ms=min_duration_ms,
        limit=limit,
        cursor=cursor,
    )
    try:
        return queries.list_traces(store, project_id=project_id, query=query)
    except InvalidCursor as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc


@router.get(
    "/traces/{trace_id}",
    response_model=TraceDetail,
    summary="One trace as a span tree",
    responses={404: {"description": "No trace with this id in the caller's project."}},
)
def get_trace(
    store: StoreDep,
    project_id: ProjectDep,
    trace_id: Annotated[
        str, Path(pattern=r"^[0-9a-fA-F]{32}$", description="The trace id: 32 hexadecimal digits.")
    ],
) -> TraceDetail:
    """Every span of the trace with its attributes, events, cost, evaluations and PII counts, nested."""
    detail = queries.get_trace(store, project_id=project_id, trace_id=trace_id.lower())
    if detail is None:
        # The same answer whether the trace does not exist or belongs to another project.
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"trace {trace_id} not found")
    return detail


@router.get("/stats", response_model=Stats, summary="Counts, latency, tokens and cost over a window")
def get_stats(
    store: StoreDep,
    project_id: ProjectDep,
    start: Start = None,
    end: End = None,
    service: Service = None,
) -> Stats:
    """Traces, spans and errors; GenAI call latency p50/p95/p99, tokens and cost, in total and by model."""
    start, end = resolve_window(start, end)
    return queries.get_stats(store, project_id=project_id, start=start, end=end, service=service)
