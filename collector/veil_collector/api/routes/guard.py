"""``POST /v1/guard``: toxicity and bias scores and decisions for one or more texts.

The SDK calls this when its own process has no classifier models (``"toxicity"``/``"bias"`` checks of
``veil.guard``). Concurrent requests are micro-batched onto the classifier by the guard service; each
caller gets its own results. Bad input is a 422 naming the field, an unknown key a 401, and a full batch
queue a 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from veil_collector.api.deps import ProjectDep
from veil_collector.guard.batcher import Overloaded
from veil_collector.guard.decisions import DecisionLog
from veil_collector.guard.service import GuardService, RequestContext

router = APIRouter(prefix="/v1", tags=["guard"])

MAX_TEXTS = 256
MAX_TOTAL_CHARS = 1_000_000

_build_lock = threading.Lock()


def _build_service(state: Any) -> GuardService:
    with _build_lock:
        service = getattr(state, "guard", None)
        if service is None:
            service = GuardService.from_settings(state.settings, decisions=DecisionLog(state.store))
            state.guard = service
        return service


async def get_guard_service(request: Request) -> GuardService:
    """The app's guard service (``app.state.guard``), built from the settings on first use if absent.

    Called by the route rather than declared as a dependency: FastAPI solving one more dependency cost the
    event loop about 9 us per request. The hot path reads ``app.state`` on the loop; the first-use build
    (a model load) runs on the threadpool.
    """
    service = getattr(request.app.state, "guard", None)
    if service is None:
        service = await run_in_threadpool(_build_service, request.app.state)
    return service


class GuardRequest(BaseModel):
    """The texts to check and how to decide."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS, description="Prompts or responses to check.")
    checks: list[Literal["toxicity", "bias"]] = Field(default=["toxicity"], min_length=1)
    target: Literal["input", "output"] = "input"
    thresholds: dict[Literal["toxicity", "bias"], Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=dict, description="Score at or above which a check fails (default 0.5)."
    )
    on_fail: Literal["block", "redact", "flag"] = Field(
        default="block", description="The decision for a failed check (redact is answered as block)."
    )
    record: bool = Field(default=True, description="Store the decisions in guard_decisions.")
    labels: bool = Field(default=False, description="Return every classifier label's score too.")
    trace_id: str = Field(default="", pattern=r"^([0-9a-f]{32})?$")
    span_id: str = Field(default="", pattern=r"^([0-9a-f]{16})?$")
    service_name: str = Field(default="", max_length=256)
    request_model: str = Field(default="", max_length=256)

    @field_validator("checks")
    @classmethod
    def _unique(cls, checks: list[str]) -> list[str]:
        return list(dict.fromkeys(checks))

    @model_validator(mode="after")
    def _bounded(self) -> GuardRequest:
        total = sum(len(t) for t in self.texts)
        if total > MAX_TOTAL_CHARS:
            raise ValueError(f"texts hold {total} characters in all; at most {MAX_TOTAL_CHARS} per request")
        return self


class CheckResult(BaseModel):
    check: Literal["toxicity", "bias"]
    score: float
    decision: Literal["pass", "block", "flag"]


class TextResult(BaseModel):
    passed: bool
    checks: list[CheckResult]
    labels: dict[str, float] | None = None


class GuardResponse(BaseModel):
    model: str = Field(description="The toxicity model that scored, as name@version.")
    results: list[TextResult] = Field(description="One per text, in request order.")


# Compact like FastAPI's own encoding; a NaN score is an error (a 500), never invalid JSON or a null.
_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@router.post(
    "/guard",
    response_model=GuardResponse,
    summary="Score texts for toxicity and bias and decide them",
    responses={401: {"description": "Missing or unknown API key"}, 503: {"description": "Guard overloaded"}},
)
async def guard(body: GuardRequest, project: ProjectDep, request: Request) -> Response:
    # The answer is encoded here from plain dicts in GuardResponse's shape (response_model documents it,
    # tests/guard/test_route.py checks it against the model): having FastAPI validate and serialize a
    # GuardResponse cost the event loop about 15 us per request, plus building its objects, per text.
    service = await get_guard_service(request)
    context = RequestContext(
        project_id=project,
        target=body.target,
        trace_id=body.trace_id,
        span_id=body.span_id,
        service_name=body.service_name,
        request_model=body.request_model,
    )
    try:
        checked = await service.check(
            body.texts,
            body.checks,
            context=context,
            thresholds=dict(body.thresholds),
            on_fail=body.on_fail,
            record=body.record,
        )
    except Overloaded as exc:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc), headers={"Retry-After": "1"}
        ) from exc
    results = [
        {
            "passed": all(v.decision == "pass" for v in verdicts),
            "checks": [{"check": v.check, "score": v.score, "decision": v.decision} for v in verdicts],
            "labels": scores.labels if body.labels else None,
        }
        for scores, verdicts in checked
    ]
    return Response(_encode_json({"model": service.model, "results": results}), media_type="application/json")
