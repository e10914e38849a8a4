"""``get_project``: a key's project, answered on the event loop from auth's cache; 401s; OpenAPI scheme."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from veil_collector import auth
from veil_collector.api import deps
from veil_collector.api.deps import ProjectDep
from veil_collector.auth import DEFAULT_PROJECT_ID, create_project
from veil_collector.config import Settings
from veil_collector.store import Store


def client_for(store: Any, tmp_path: Path, *, no_auth: bool = False) -> TestClient:
    """A bare app with one sync route scoped by ``ProjectDep``, as the query routes are."""
    app = FastAPI()

    @app.get("/whoami")
    def whoami(project: ProjectDep) -> str:
        return project

    app.state.settings = Settings(
        clickhouse_dsn=store.dsn,
        database=store.database,
        data_dir=tmp_path,
        pii_ner_enabled=False,
        no_auth=no_auth,
    )
    app.state.store = store
    return TestClient(app)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys that reached ``resolve_api_key`` (the threadpool path, a ClickHouse query), in order."""
    seen: list[str] = []
    real = deps.resolve_api_key

    def counting(store: Store, key: str) -> str | None:
        seen.append(key)
        return real(store, key)

    monkeypatch.setattr(deps, "resolve_api_key", counting)
    return seen


@pytest.fixture
def other_store(new_store: Callable[[], Store]) -> Store:
    return new_store()


def test_a_known_key_is_answered_from_the_cache_until_its_entry_expires(
    store: Any, tmp_path: Path, lookups: list[str]
) -> None:
    project, key = create_project(store, "p")
    header = {"Authorization": f"Bearer {key}"}
    with client_for(store, tmp_path) as client:
        assert [client.get("/whoami", headers=header).json() for _ in range(3)] == [project] * 3
        assert lookups == [key]
        # Expired entries are looked up again: that is where a revoked key is noticed.
        for cache_key, (granted, _) in list(auth._cache.items()):
            auth._cache[cache_key] = (granted, 0.0)
        assert client.get("/whoami", headers=header).json() == project
    assert lookups == [key, key]


def test_refusals_are_401s_with_their_reason(store: Any, tmp_path: Path, lookups: list[str]) -> None:
    cases = [
        ({}, "missing Authorization header"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "must be 'Bearer <api key>'"),
        ({"Authorization": "Bearer not-a-veil-key"}, "unknown or revoked API key"),
        ({"Authorization": "Bearer veil_unknown"}, "unknown or revoked API key"),
        ({"Authorization": "Bearer veil_unknown"}, "unknown or revoked API key"),
    ]
    with client_for(store, tmp_path) as client:
        for headers, reason in cases:
            response = client.get("/whoami", headers=headers)
            assert response.status_code == 401 and reason in response.json()["detail"]
            assert response.headers["WWW-Authenticate"] == "Bearer"
    # Malformed headers and keys without the prefix never query; an unknown key is queried once and its
    # refusal cached like a grant (a flood of bad keys does not become a flood of queries).
    assert lookups == ["veil_unknown"]


def test_a_cached_answer_holds_for_its_own_store_only(
    store: Any, other_store: Store, tmp_path: Path, lookups: list[str]
) -> None:
    project, key = create_project(store, "p")
    header = {"Authorization": f"Bearer {key}"}
    with client_for(store, tmp_path) as mine, client_for(other_store, tmp_path) as theirs:
        assert mine.get("/whoami", headers=header).json() == project
        assert theirs.get("/whoami", headers=header).status_code == 401


def test_without_auth_every_request_is_the_default_project(
    store: Any, tmp_path: Path, lookups: list[str]
) -> None:
    with client_for(store, tmp_path, no_auth=True) as client:
        assert client.get("/whoami").json() == DEFAULT_PROJECT_ID
    assert lookups == []


def test_openapi_documents_the_key_as_a_bearer_scheme(store: Any, tmp_path: Path) -> None:
    with client_for(store, tmp_path) as client:
        spec = client.get("/openapi.json").json()
    (name, scheme), *_ = spec["components"]["securitySchemes"].items()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    operation = spec["paths"]["/whoami"]["get"]
    assert operation["security"] == [{name: []}]
    assert "parameters" not in operation  # the key is the scheme, not an extra header parameter
