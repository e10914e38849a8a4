"""Dependencies shared by the routes: settings, the store, and the caller's project.

All are ``async``: FastAPI runs a plain ``def`` dependency on its threadpool, and for a read of
``app.state`` that hop is all the work. The three hops of every scoped request (settings, store, project)
were most of ``POST /v1/guard``'s own server cost (``bench/results/guard_http_overhead.md``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer

from veil_collector.auth import DEFAULT_PROJECT_ID, cached_api_key, resolve_api_key
from veil_collector.config import Settings
from veil_collector.pipeline import Pipeline
from veil_collector.spool import Spool
from veil_collector.store.client import Store


class Unauthorized(Exception):
    """No usable API key; the message says what is wrong."""


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_spool(request: Request) -> Spool:
    return request.app.state.spool


async def get_pipeline(request: Request) -> Pipeline:
    return request.app.state.pipeline


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
SpoolDep = Annotated[Spool, Depends(get_spool)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]


def bearer_key(authorization: str | None) -> str:
    """The API key of an ``Authorization: Bearer <key>`` header.

    Raises:
        Unauthorized: the header is missing or not a Bearer token.
    """
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <api key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <api key>'")
    return key.strip()


async def authorize(request: Request) -> str:
    """The project id the request's ``Authorization`` header grants; the default project under ``no_auth``.

    Answered on the event loop from auth's cache when it knows the key; a key it does not know costs a
    ClickHouse query, which runs on the threadpool. Going to the threadpool for every request cost 85 us
    of CPU per request (measured on POST /v1/guard), about as much as the rest of that route.

    Raises:
        Unauthorized: the header is missing, not a Bearer token, or the key is unknown or revoked.
    """
    state = request.app.state
    if state.settings.no_auth:
        return DEFAULT_PROJECT_ID
    key = bearer_key(request.headers.get("authorization"))
    known, project_id = cached_api_key(state.store, key)
    if not known:
        project_id = await run_in_threadpool(resolve_api_key, state.store, key)
    if project_id is None:
        raise Unauthorized("unknown or revoked API key")
    return project_id


class ProjectKey(HTTPBearer):
    """The caller's project id from its API key; 401 for a missing, malformed, unknown or revoked key.

    ``get_project`` is an instance: one dependency that is also the bearer security scheme in OpenAPI.
    Not a function taking ``SettingsDep``, ``StoreDep`` and a ``Header()`` parameter, because FastAPI
    solves each of those on every request: that shape cost the event loop 37 us more per request than
    this one (same cached lookup, measured in-process). So the settings and the store are read from
    ``app.state`` (:func:`authorize`), and a dependency override of ``get_store`` does not reach this one.
    """

    async def __call__(self, request: Request) -> str:  # type: ignore[override]
        try:
            return await authorize(request)
        except Unauthorized as exc:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail=str(exc),
                headers={"WWW-Authenticate": "Bearer"},
            ) from exc


get_project = ProjectKey(description="A project's API key: 'Authorization: Bearer <api key>'.")
ProjectDep = Annotated[str, Depends(get_project)]
"""The caller's project id; every query must filter by it."""
