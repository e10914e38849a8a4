"""The collector app's lifespan wires the guard service onto the classifier stage's model and flushes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from veil_collector.app import create_app
from veil_collector.auth import create_project
from veil_collector.config import Settings


def test_guard_service_shares_the_classifier_model_and_flushes_decisions_at_shutdown(
    chdb_dsn: str, store: Any, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    settings = Settings(
        clickhouse_dsn=chdb_dsn,
        database=store.database,
        data_dir=tmp_path / "data",
        spool_dir=tmp_path / "spool",
        models_dir=models_dir,
        classifier_device="cpu",
        pii_ner_enabled=False,
        alerts_enabled=False,
    )
    key = create_project(store, "wiring")[1]
    with TestClient(create_app(settings)) as client:
        state = client.app.state
        assert state.guard is not None
        # One copy of the model in memory: the guard scores on the classifier stage's own classifier.
        assert state.guard._scorer.toxicity is state.classifier.toxicity
        response = client.post(
            "/v1/guard",
            json={"texts": ["you are an idiot", "have a nice day"], "checks": ["toxicity"]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        # The decision log batches rows; nothing forces a flush before the app stops.
    rows = store.query("SELECT count() FROM guard_decisions WHERE Check = 'toxicity'").result_rows
    assert rows[0][0] == 2
