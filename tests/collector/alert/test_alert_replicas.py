"""Several collectors on one ClickHouse: two engines on one database, each with its own ``data_dir``
(its own SQLite alert state and outbox), behave as two replicas of the collector.

Rules are shared through ClickHouse; each engine reads them again every ``reload`` seconds. Window rules
are evaluated by the elected engine only; heartbeats come every ``HEARTBEAT`` seconds and an engine is gone
after three of them. Both intervals are short here; evaluation time (``now``) is driven by the test.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_alert_api import FILE_RULES
from test_alert_events import T0, evaluation
from test_alert_windows import seed_calls

from veil_collector.alert import AlertEngine
from veil_collector.alert.rules import Rule
from veil_collector.alert.sqlite import DB_NAME
from veil_collector.api.deps import get_project
from veil_collector.api.routes.alerts import router

RELOAD = 0.2
HEARTBEAT = 0.5
LIVENESS = 3 * HEARTBEAT
WINDOW_RULES = """
rules:
  - id: errors
    name: Error rate
    window: {type: error_rate, window: 5m, threshold: 0.1}
    every: 30s
    destinations: [{name: ops, type: webhook, url: "http://127.0.0.1:9/hook"}]
"""
TOXIC = {
    "id": "toxic",
    "name": "Toxic output",
    "event": {"type": "toxicity", "threshold": 0.8},
    "destinations": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook"}],
}


@pytest.fixture
def replicas(
    settings_factory: Callable[..., Any], store: Any, tmp_path: Path
) -> tuple[AlertEngine, AlertEngine]:
    """Replica ``a`` mounts the rules file; ``b`` mounts none (it leaves the file's rules alone)."""
    a = AlertEngine(settings_factory(FILE_RULES, data_dir=tmp_path / "a"), store, reload=RELOAD)
    b = AlertEngine(settings_factory(data_dir=tmp_path / "b"), store, reload=RELOAD)
    return a, b


@pytest.fixture
def clients(replicas: tuple[AlertEngine, AlertEngine]) -> Iterator[tuple[TestClient, TestClient]]:
    """The alert routes of each replica (a load balancer may send any request to either)."""
    apps = []
    for engine in replicas:
        app = FastAPI()
        app.include_router(router)
        app.state.alert_engine = engine
        app.dependency_overrides[get_project] = lambda: "default"
        apps.append(app)
    with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
        yield a, b


def test_a_rule_created_on_one_replica_is_evaluated_by_the_other_after_a_reload(
    replicas: tuple[AlertEngine, AlertEngine],
) -> None:
    a, b = replicas
    a.rules.create(Rule.model_validate(TOXIC))
    b.on_evaluations([evaluation(0.9)])
    assert b.evaluate(T0) == []  # b read its rules less than RELOAD ago
    time.sleep(RELOAD * 1.5)
    b.on_evaluations([evaluation(0.9)])
    [fired] = b.evaluate(T0 + 1)
    assert (fired.rule_id, fired.status) == ("toxic", "firing")

    a.rules.delete("default", "toxic")
    time.sleep(RELOAD * 1.5)
    [resolved] = b.evaluate(T0 + 2)  # the rule is gone on every replica: b resolves what it fired
    assert (resolved.status, resolved.fingerprint) == ("resolved", fired.fingerprint)


def test_the_api_of_every_replica_serves_the_same_rules(clients: tuple[TestClient, TestClient]) -> None:
    a, b = clients
    assert a.post("/api/alert-rules", json=TOXIC).status_code == 201
    assert b.post("/api/alert-rules", json=TOXIC).status_code == 409  # the id is taken on every replica
    assert b.get("/api/alert-rules/toxic").json()["name"] == "Toxic output"
    assert b.put("/api/alert-rules/toxic", json={**TOXIC, "name": "Very toxic"}).status_code == 200
    assert a.get("/api/alert-rules/toxic").json()["name"] == "Very toxic"
    assert b.delete("/api/alert-rules/toxic").status_code == 204
    assert a.get("/api/alert-rules/toxic").status_code == 404
    assert a.delete("/api/alert-rules/toxic").status_code == 404
    assert a.post("/api/alert-rules", json=TOXIC).status_code == 201  # a deleted id can be used again

    # The file's rule, synced by replica a, is read-only through replica b too.
    assert b.get("/api/alert-rules/from-file").json()["source"] == "file"
    assert b.delete("/api/alert-rules/from-file").status_code == 409
    assert b.put("/api/alert-rules/from-file", json={**TOXIC, "id": "from-file"}).status_code == 409
    assert [r["id"] for r in b.get("/api/alert-rules").json()] == ["from-file", "toxic"]


def test_replicas_starting_with_the_same_file_write_no_new_versions(
    settings_factory: Callable[..., Any], store: Any, tmp_path: Path
) -> None:
    settings = [settings_factory(FILE_RULES, data_dir=tmp_path / name) for name in "abc"]
    for replica in settings:
        AlertEngine(replica, store)
    assert store.query("SELECT count() FROM alert_rules").result_rows == [(1,)]


def test_rules_of_an_older_collector_move_from_sqlite_to_clickhouse(
    settings_factory: Callable[..., Any], store: Any, tmp_path: Path
) -> None:
    # alerts.db as a collector before the shared rules left it: its API rules in a local table.
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / DB_NAME) as conn:
        conn.execute(
            "CREATE TABLE rules (project_id TEXT NOT NULL, rule_id TEXT NOT NULL, source TEXT NOT NULL, "
            "body TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (project_id, rule_id))"
        )
        for rule_id, source in (("toxic", "api"), ("was-in-file", "file")):
            body = Rule.model_validate({**TOXIC, "id": rule_id, "source": source}).with_secrets()
            conn.execute(
                "INSERT INTO rules VALUES ('default', ?, ?, ?, 0)", (rule_id, source, json.dumps(body))
            )
    engine = AlertEngine(settings_factory(data_dir=old), store)
    # The file's rules come from the file at each start, not from the old table.
    assert [r.id for r in engine.rules.list_rules()] == ["toxic"]
    with sqlite3.connect(old / DB_NAME) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'rules'").fetchall() == []
    engine.rules.delete("default", "toxic")
    assert AlertEngine(settings_factory(data_dir=old), store).rules.list_rules() == []  # not brought back


def elected(settings_factory: Callable[..., Any], store: Any, tmp_path: Path, name: str) -> AlertEngine:
    """A replica taking part in the election (embedded ClickHouse alone would not need one)."""
    return AlertEngine(
        settings_factory(WINDOW_RULES, data_dir=tmp_path / name),
        store,
        elect=True,
        instance_id=name,
        heartbeat=HEARTBEAT,
        reload=RELOAD,
    )


def test_one_replica_evaluates_window_rules_and_another_takes_over_when_it_dies(
    settings_factory: Callable[..., Any], store: Any, tmp_path: Path
) -> None:
    seed_calls(store, [{"ts": T0 - 10, "StatusCode": "Error"}])  # error rate 1.0 for the next 5 minutes
    a, b = (elected(settings_factory, store, tmp_path, name) for name in "ab")
    [fired] = a.evaluate(T0)  # the smallest live id leads
    assert b.evaluate(T0) == [] and b.outbox_counts() == {} and b.active("default") == []

    # a stops heart-beating (killed: no stop written). Within the liveness window b still follows...
    time.sleep(HEARTBEAT * 1.2)
    assert b.evaluate(T0 + 30) == []
    # ... and once a's last heartbeat is older than the window, b leads and fires on its own state: the one
    # duplicate notification that a change of leader may cost.
    time.sleep(LIVENESS)
    [again] = b.evaluate(T0 + 60)
    assert (again.status, again.fingerprint) == ("firing", fired.fingerprint)

    # a comes back (its evaluator was stuck, say): it leads again without notifying (its alert is firing
    # already) and b, following again, drops the window state it held.
    time.sleep(HEARTBEAT * 1.2)
    assert a.evaluate(T0 + 90) == []
    assert b.evaluate(T0 + 90) == [] and b.active("default") == []
    assert [alert["status"] for alert in a.active("default")] == ["firing"]


def test_a_leader_that_stops_cleanly_is_replaced_at_the_next_heartbeat(
    settings_factory: Callable[..., Any], store: Any, tmp_path: Path
) -> None:
    seed_calls(store, [{"ts": T0 - 10, "StatusCode": "Error"}])
    a, b = (elected(settings_factory, store, tmp_path, name) for name in "ab")
    assert len(a.evaluate(T0)) == 1 and b.evaluate(T0) == []
    a.stop()
    time.sleep(HEARTBEAT * 1.2)  # one heartbeat interval, well inside the liveness window
    [fired] = b.evaluate(T0 + 30)
    assert fired.status == "firing"


def test_an_event_rule_fires_on_the_follower_that_stored_the_record(
    settings_factory: Callable[..., Any], store: Any, tmp_path: Path
) -> None:
    a, b = (elected(settings_factory, store, tmp_path, name) for name in "ab")
    a.rules.create(Rule.model_validate(TOXIC))
    time.sleep(RELOAD * 1.5)
    a.evaluate(T0)
    b.on_evaluations([evaluation(0.9)])  # the follower stored this record: it alerts on it
    [fired] = b.evaluate(T0)
    assert fired.rule_id == "toxic"
