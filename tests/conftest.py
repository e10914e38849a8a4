"""Fixtures shared by every test package.

chDB opens one engine path per process, so the whole test session shares one embedded ClickHouse folder
and each test gets a database of its own in it: tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The DSN of this test session's embedded ClickHouse folder."""
    path: Path = tmp_path_factory.mktemp("clickhouse")
    return f"chdb://{path}"


@pytest.fixture
def new_store(chdb_dsn: str) -> Iterator[Callable[[], Any]]:
    """Makes migrated embedded ClickHouse databases private to one test (for tests that need two)."""
    from veil_collector.store import Store
    from veil_collector.store.migrate import migrate

    made: list[Store] = []

    def make() -> Store:
        db = Store(chdb_dsn, database=f"test_{uuid.uuid4().hex[:12]}")
        made.append(db)
        migrate(db)
        return db

    yield make
    for db in made:
        db.command(f"DROP DATABASE IF EXISTS `{db.database}`")
        db.close()


@pytest.fixture
def store(new_store: Callable[[], Any]) -> object:
    """A migrated embedded ClickHouse database, private to one test."""
    return new_store()
