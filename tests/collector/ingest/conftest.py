"""Fixtures of the ingest tests: a collector app on the test's private embedded ClickHouse database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from veil_collector.app import create_app
from veil_collector.config import Settings


@pytest.fixture
def make_settings(chdb_dsn: str, store: Any, tmp_path: Path) -> Callable[..., Settings]:
    """Settings bound to the test's database and a private spool; keyword arguments override fields."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "clickhouse_dsn": chdb_dsn,
            "database": store.database,
            "data_dir": tmp_path / "data",
            "spool_dir": tmp_path / "spool",
            "drain_interval_s": 0.05,
            "pii_ner_enabled": False,
            "classifiers_enabled": False,
            "alerts_enabled": False,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """A running collector (lifespan started) that requires API keys."""
    with TestClient(create_app(make_settings())) as test_client:
        yield test_client
