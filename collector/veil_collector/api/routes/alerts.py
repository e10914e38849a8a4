"""Alert rules (``/api/alert-rules``) and alert history (``/api/alerts``) of the caller's project.

Secrets (webhook secrets, Slack URLs, PagerDuty routing keys) are write-only: responses show them masked.
Rules from the rules file are read-only here (409); edit the file and restart instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel

from veil_collector.alert import AlertEngine
from veil_collector.alert.rules import Rule, RuleSpec
from veil_collector.alert.rulestore import RuleConflict, RuleNotFound
from veil_collector.api.deps import ProjectDep

router = APIRouter(prefix="/api", tags=["alerts"])


def get_alert_engine(request: Request) -> AlertEngine:
    engine = getattr(request.app.state, "alert_engine", None)
    if engine is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="alerting is not running")
    return engine


AlertEngineDep = Annotated[AlertEngine, Depends(get_alert_engine)]


class AlertRecord(BaseModel):
    """One row of the alert history: a firing or a resolution of one rule's label set."""

    timestamp: datetime
    rule_id: str
    rule_name: str
    fingerprint: str
    status: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    starts_at: datetime
    ends_at: datetime | None
    notification_id: str


def _not_found(exc: RuleNotFound) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))


def _conflict(exc: RuleConflict) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))


@router.get("/alert-rules", response_model=list[Rule])
def list_rules(project: ProjectDep, engine: AlertEngineDep) -> list[Rule]:
    return engine.rules.list_rules(project)


@router.get("/alert-rules/{rule_id}", response_model=Rule)
def get_rule(rule_id: str, project: ProjectDep, engine: AlertEngineDep) -> Rule:
    try:
        return engine.rules.get(project, rule_id)
    except RuleNotFound as exc:
        raise _not_found(exc) from exc


@router.post("/alert-rules", response_model=Rule, status_code=status.HTTP_201_CREATED)
def create_rule(spec: RuleSpec, project: ProjectDep, engine: AlertEngineDep) -> Rule:
    rule = Rule(**_fields(spec), project=project, source="api")
    try:
        return engine.rules.create(rule)
    except RuleConflict as exc:
        raise _conflict(exc) from exc


@router.put("/alert-rules/{rule_id}", response_model=Rule)
def replace_rule(rule_id: str, spec: RuleSpec, project: ProjectDep, engine: AlertEngineDep) -> Rule:
    if spec.id != rule_id:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"the body's id {spec.id!r} differs from the path's {rule_id!r}; ids cannot change",
        )
    try:
        return engine.rules.replace(Rule(**_fields(spec), project=project, source="api"))
    except RuleNotFound as exc:
        raise _not_found(exc) from exc
    except RuleConflict as exc:
        raise _conflict(exc) from exc


@router.delete("/alert-rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(rule_id: str, project: ProjectDep, engine: AlertEngineDep) -> Response:
    try:
        engine.rules.delete(project, rule_id)
    except RuleNotFound as exc:
        raise _not_found(exc) from exc
    except RuleConflict as exc:
        raise _conflict(exc) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/alerts", response_model=list[AlertRecord])
def list_alerts(
    project: ProjectDep,
    engine: AlertEngineDep,
    status_: Annotated[Literal["firing", "resolved"] | None, Query(alias="status")] = None,
    rule_id: str | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertRecord]:
    rows = engine.history(project, status=status_, rule_id=rule_id, since=since, limit=limit)
    return [
        AlertRecord(
            timestamp=row["Timestamp"],
            rule_id=row["RuleId"],
            rule_name=row["RuleName"],
            fingerprint=row["Fingerprint"],
            status=row["Status"],
            severity=row["Severity"],
            labels=row["Labels"],
            annotations=row["Annotations"],
            value=row["Value"],
            starts_at=row["StartsAt"],
            ends_at=row["EndsAt"],
            notification_id=row["NotificationId"],
        )
        for row in rows
    ]


def _fields(spec: RuleSpec) -> dict[str, Any]:
    """The spec's fields as model objects (secrets stay ``SecretStr``, not their masked dump)."""
    return {name: getattr(spec, name) for name in RuleSpec.model_fields}
