"""Dependencies shared by the routes: settings, the store, and the caller's project.

All are ``async``: FastAPI runs a plain ``def`` dependency on its threadpool, and for a read of
``app.state`` that hop is all the work. The three hops of every scoped request (settings, store, project)
were most of ``POST /v1/guard``'s own server cost (``bench/results/guard_http_overhead.md``).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer

from veil_collector.auth import DEFAULT_PROJECT_ID, hash_key, resolve_api_key
from veil_collector.config import Settings
from veil_collector.pipeline import Pipeline
from veil_collector.spool import Spool
from veil_collector.store.client import Store

# Recent grants of get_project: (store DSN, database, sha256 of the Authorization header) -> (project id,
# monotonic expiry). A hit answers on the event loop; a miss calls authenticate() on the threadpool, since
# a key missing from auth's own cache costs a ClickHouse query. Asking authenticate() on every request
# cost 85 us of CPU per request (the threadpool hop), about as much as the rest of POST /v1/guard.
# Only grants are kept (a refusal is no hot path), and briefly: auth may hand out an answer up to
# auth.CACHE_TTL_S old, so a revoked key stops working over HTTP within auth.CACHE_TTL_S + _GRANT_TTL_S.
# When a grant expires, the requests in flight with that key take the threadpool path once each.
_GRANT_TTL_S = 5.0
_GRANT_LIMIT = 10_000
_grants: dict[tuple[str, str, str], tuple[str, float]] = {}


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


def authenticate(authorization: str | None, settings: Settings, store: Store) -> str:
    """The project id an ``Authorization`` header grants; the default project under ``no_auth``.

    Blocks on ClickHouse when the key is not in auth's cache.

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


class ProjectKey(HTTPBearer):
    """The caller's project id from its API key; 401 for a missing, malformed, unknown or revoked key.

    ``get_project`` is an instance: one dependency that is also the bearer security scheme in OpenAPI.
    Not a function taking ``SettingsDep``, ``StoreDep`` and a ``Header()`` parameter, because FastAPI
    solves each of those on every request: that shape cost the event loop 37 us more per request than
    this one (same cached lookup, measured in-process). So the settings and the store are read from
    ``app.state`` here, and a dependency override of ``get_store`` does not reach this one.
    """

    async def __call__(self, request: Request) -> str:  # type: ignore[override]
        state = request.app.state
        settings, store = state.settings, state.store
        if settings.no_auth:
            return DEFAULT_PROJECT_ID
        authorization = request.headers.get("authorization")
        grant_key = None
        if authorization:
            grant_key = (store.dsn, store.database, hash_key(authorization))
            grant = _grants.get(grant_key)
            if grant is not None and grant[1] > time.monotonic():
                return grant[0]
        try:
            project_id = await run_in_threadpool(authenticate, authorization, settings, store)
        except Unauthorized as exc:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail=str(exc),
                headers={"WWW-Authenticate": "Bearer"},
            ) from exc
        if grant_key is not None:
            if len(_grants) >= _GRANT_LIMIT:
                _grants.clear()  # atomic, unlike evicting one entry while another thread may insert
            _grants[grant_key] = (project_id, time.monotonic() + _GRANT_TTL_S)
        return project_id


get_project = ProjectKey(description="A project's API key: 'Authorization: Bearer <api key>'.")
ProjectDep = Annotated[str, Depends(get_project)]
"""The caller's project id; every query must filter by it."""
