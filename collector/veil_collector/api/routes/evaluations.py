"""Classifier results, human labels and the bias view of the caller's project.

``GET /api/evaluations`` lists scores with filters, ``POST /api/feedback`` stores a human label (the
ground truth of the bias AUCs), ``GET /api/bias`` returns the per-group disparity report. Routes only
translate HTTP to :mod:`veil_collector.classify.queries`; the project comes from the caller's API key
(``ProjectDep``). Plain ``def`` routes: the store client blocks, so FastAPI runs them on its thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from veil_collector.api.deps import ProjectDep, StoreDep
from veil_collector.api.params import End, Start, resolve_window
from veil_collector.classify import queries
from veil_collector.classify.queries import (
    MAX_EVALUATION_LIMIT,
    BiasReport,
    EvaluationFilter,
    EvaluationRow,
    FeedbackIn,
    FeedbackStored,
    Target,
)

router = APIRouter(prefix="/api", tags=["evaluations"])


@router.get("/evaluations", response_model=list[EvaluationRow], summary="List classifier scores")
def list_evaluations(
    store: StoreDep,
    project_id: ProjectDep,
    start: Start = None,
    end: End = None,
    evaluator: Annotated[
        str | None, Query(description="`toxicity`, `identity`, `bias`, ... (gen_ai.evaluation.name).")
    ] = None,
    label: Annotated[str | None, Query(description="e.g. `toxicity`, `insult`, or a group name.")] = None,
    target: Annotated[Target | None, Query(description="Which text was scored.")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="Scores at least this.")] = None,
    max_score: Annotated[float | None, Query(ge=0, le=1, description="Scores at most this.")] = None,
    trace_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVALUATION_LIMIT)] = 100,
) -> list[EvaluationRow]:
    """Scores of spans in the window, newest span first."""
    start, end = resolve_window(start, end)
    query = EvaluationFilter(
        start=start,
        end=end,
        evaluator=evaluator,
        label=label,
        target=target,
        min_score=min_score,
        max_score=max_score,
        trace_id=trace_id,
        limit=limit,
    )
    try:
        return queries.list_evaluations(store, project_id=project_id, query=query)
    except ValueError as exc:  # min_score above max_score
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc


@router.post(
    "/feedback",
    response_model=FeedbackStored,
    status_code=status.HTTP_201_CREATED,
    summary="Store a human label on a span",
)
def post_feedback(store: StoreDep, project_id: ProjectDep, feedback: FeedbackIn) -> FeedbackStored:
    """A human label, e.g. ``{"trace_id": ..., "span_id": ..., "name": "toxicity", "value": 1}``.

    The latest label per span and name counts; ``GET /api/bias`` uses ``toxicity`` labels for its AUCs.
    """
    return queries.insert_feedback(store, project_id=project_id, feedback=feedback)


@router.get("/bias", response_model=BiasReport, summary="Toxicity disparity per identity group")
def get_bias(
    store: StoreDep,
    project_id: ProjectDep,
    start: Start = None,
    end: End = None,
    target: Annotated[Target, Query(description="Which scored texts to compare.")] = "output",
    threshold: Annotated[float, Query(ge=0, le=1, description="Toxicity score that flags a text.")] = 0.5,
    feedback_name: Annotated[
        str, Query(pattern=r"^[a-z][a-z0-9_.-]{0,63}$", description="The feedback name holding human labels.")
    ] = "toxicity",
) -> BiasReport:
    """Per group: flagged rate of texts mentioning it against the background rate; with human labels, the
    Jigsaw subgroup, BPSN and BNSP AUCs and their p = -5 power means."""
    start, end = resolve_window(start, end)
    return queries.bias_report(
        store,
        project_id=project_id,
        start=start,
        end=end,
        target=target,
        threshold=threshold,
        feedback_name=feedback_name,
    )
