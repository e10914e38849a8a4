"""Projects and API keys: a key maps to exactly one project, and only its sha256 is stored.

A key is ``veil_`` followed by 43 URL-safe characters (256 random bits); it is shown once, when the
project is created. ``resolve_api_key`` caches answers for a short time so that the ingest path does not
query ClickHouse on every request; a revoked key therefore stops working within ``CACHE_TTL_S``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid

from veil_collector.store.client import Store

DEFAULT_PROJECT_ID = "default"
KEY_PREFIX = "veil_"
CACHE_TTL_S = 30.0
_CACHE_LIMIT = 10_000

_cache: dict[str, tuple[str | None, float]] = {}
_cache_lock = threading.Lock()


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_project(store: Store, name: str) -> tuple[str, str]:
    """Create a project with one API key.

    Args:
        store: a migrated store.
        name: a human-readable name (not unique; the returned id is).

    Returns:
        ``(project_id, api_key)``. The key is not stored and cannot be shown again.

    Raises:
        ValueError: the name is empty or longer than 200 characters.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise ValueError("a project name must have 1 to 200 characters")
    project_id = uuid.uuid4().hex
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    store.command(
        "INSERT INTO projects (ProjectId, Name, CreatedAt, UpdatedAt) "
        "VALUES ({p:String}, {n:String}, now64(3), now64(3))",
        parameters={"p": project_id, "n": name},
    )
    store.command(
        "INSERT INTO api_keys (KeyHash, KeyPrefix, ProjectId, CreatedAt, UpdatedAt) "
        "VALUES ({h:String}, {k:String}, {p:String}, now64(3), now64(3))",
        parameters={"h": hash_key(key), "k": key[: len(KEY_PREFIX) + 6], "p": project_id},
    )
    return project_id, key


def cached_api_key(store: Store, key: str) -> tuple[bool, str | None]:
    """What the cache knows of ``key`` without asking ClickHouse: ``(True, project id or None)`` while an
    answer is fresh, ``(False, None)`` when :func:`resolve_api_key` must look it up. Never blocks on I/O,
    so the event loop may call it."""
    if not key.startswith(KEY_PREFIX):
        return True, None
    with _cache_lock:
        hit = _cache.get(_cache_key(store, key))
    if hit is not None and hit[1] > time.monotonic():
        return True, hit[0]
    return False, None


def resolve_api_key(store: Store, key: str) -> str | None:
    """The project id of an active key of an existing project, or None. Cached for ``CACHE_TTL_S``."""
    known, project_id = cached_api_key(store, key)
    if known:
        return project_id
    rows = store.query(
        "SELECT k.ProjectId FROM api_keys AS k FINAL "
        "INNER JOIN (SELECT ProjectId, Deleted FROM projects FINAL) AS p ON p.ProjectId = k.ProjectId "
        "WHERE k.KeyHash = {h:String} AND k.Revoked = 0 AND p.Deleted = 0 LIMIT 1",
        parameters={"h": hash_key(key)},
    ).result_rows
    project_id = rows[0][0] if rows else None
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[_cache_key(store, key)] = (project_id, time.monotonic() + CACHE_TTL_S)
    return project_id


def _cache_key(store: Store, key: str) -> str:
    return f"{store.dsn}\0{store.database}\0{hash_key(key)}"
