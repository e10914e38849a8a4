"""``get_project``: a key's project, answered on the event loop once granted; 401s; the OpenAPI scheme."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from veil_collector.api import deps
from veil_collector.api.deps import ProjectDep
from veil_collector.auth import DEFAULT_PROJECT_ID, create_project
from veil_collector.config import Settings
from veil_collector.store import Store
from veil_collector.store.migrate import migrate


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
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The Authorization headers that reached ``authenticate`` (the threadpool path), in order."""
    seen: list[str | None] = []
    real = deps.authenticate

    def counting(authorization: str | None, settings: Settings, store: Store) -> str:
        seen.append(authorization)
        return real(authorization, settings, store)

    monkeypatch.setattr(deps, "authenticate", counting)
    return seen


@pytest.fixture
def other_store(chdb_dsn: str) -> Iterator[Store]:
    db = Store(chdb_dsn, database=f"test_{uuid.uuid4().hex[:12]}")
    migrate(db)
    yield db
    db.command(f"DROP DATABASE IF EXISTS `{db.database}`")
    db.close()


def test_a_granted_key_is_not_looked_up_again_until_its_grant_expires(
    store: Any, tmp_path: Path, lookups: list[str | None]
) -> None:
    project, key = create_project(store, "p")
    header = {"Authorization": f"Bearer {key}"}
    with client_for(store, tmp_path) as client:
        assert [client.get("/whoami", headers=header).json() for _ in range(3)] == [project] * 3
        assert len(lookups) == 1
        # Expired grants are asked for again: that is where a revoked key is noticed.
        for grant_key, (granted, _) in list(deps._grants.items()):
            deps._grants[grant_key] = (granted, 0.0)
        assert client.get("/whoami", headers=header).json() == project
    assert len(lookups) == 2


def test_refusals_are_401s_with_their_reason_and_are_never_remembered(
    store: Any, tmp_path: Path, lookups: list[str | None]
) -> None:
    cases = [
        ({}, "missing Authorization header"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "must be 'Bearer <api key>'"),
        ({"Authorization": "Bearer veil_unknown"}, "unknown or revoked API key"),
        ({"Authorization": "Bearer veil_unknown"}, "unknown or revoked API key"),
    ]
    with client_for(store, tmp_path) as client:
        for headers, reason in cases:
            response = client.get("/whoami", headers=headers)
            assert response.status_code == 401 and reason in response.json()["detail"]
            assert response.headers["WWW-Authenticate"] == "Bearer"
    assert len(lookups) == len(cases)


def test_a_grant_holds_for_its_own_store_only(
    store: Any, other_store: Store, tmp_path: Path, lookups: list[str | None]
) -> None:
    project, key = create_project(store, "p")
    header = {"Authorization": f"Bearer {key}"}
    with client_for(store, tmp_path) as mine, client_for(other_store, tmp_path) as theirs:
        assert mine.get("/whoami", headers=header).json() == project
        assert theirs.get("/whoami", headers=header).status_code == 401


def test_without_auth_every_request_is_the_default_project(
    store: Any, tmp_path: Path, lookups: list[str | None]
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
