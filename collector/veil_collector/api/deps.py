"""Dependencies shared by the routes: settings, the store, and the caller's project."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from veil_collector.auth import DEFAULT_PROJECT_ID, resolve_api_key
from veil_collector.config import Settings
from veil_collector.pipeline import Pipeline
from veil_collector.spool import Spool
from veil_collector.store.client import Store


class Unauthorized(Exception):
    """No usable API key; the message says what is wrong."""


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_spool(request: Request) -> Spool:
    return request.app.state.spool


def get_pipeline(request: Request) -> Pipeline:
    return request.app.state.pipeline


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
SpoolDep = Annotated[Spool, Depends(get_spool)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]


def authenticate(authorization: str | None, settings: Settings, store: Store) -> str:
    """The project id an ``Authorization`` header grants; the default project under ``no_auth``.

    Raises:
        Unauthorized: the header is missing, not a Bearer token, or the key is unknown or revoked.
    """
    if settings.no_auth:
        return DEFAULT_PROJECT_ID
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <api key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <api key>'")
    project_id = resolve_api_key(store, key.strip())
    if project_id is None:
        raise Unauthorized("unknown or revoked API key")
    return project_id


def get_project(
    settings: SettingsDep, store: StoreDep, authorization: Annotated[str | None, Header()] = None
) -> str:
    try:
        return authenticate(authorization, settings, store)
    except Unauthorized as exc:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=str(exc),
            headers={"WWW-Authenticate": "Bearer"},
        ) from exc


ProjectDep = Annotated[str, Depends(get_project)]
"""The caller's project id; every query must filter by it."""
