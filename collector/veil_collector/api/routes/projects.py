"""``POST /api/projects``: create a project and its API key, guarded by the admin token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from veil_collector.api.deps import SettingsDep, StoreDep
from veil_collector.auth import create_project

router = APIRouter(prefix="/api/projects", tags=["projects"])


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class ProjectCreated(BaseModel):
    project_id: str
    name: str
    api_key: str = Field(description="Shown once; only its sha256 is stored")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectCreated)
async def create(
    body: ProjectCreate,
    settings: SettingsDep,
    store: StoreDep,
    authorization: Annotated[str | None, Header()] = None,
) -> ProjectCreated:
    if settings.admin_token is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "project creation over HTTP is disabled; set VEIL_ADMIN_TOKEN or run `veil projects create`",
        )
    expected = f"Bearer {settings.admin_token.get_secret_value()}"
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "send 'Authorization: Bearer <admin token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    project_id, key = await run_in_threadpool(create_project, store, body.name)
    return ProjectCreated(project_id=project_id, name=body.name.strip(), api_key=key)
