"""ClickHouse trouble during evaluation: history waits in SQLite, window rules skip a turn, nothing raises.

The outage is real: the test renames the table away in its private database and back again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from test_alert_events import RULES, T0, evaluation

from veil_collector.alert import AlertEngine, outbox
from veil_collector.alert import engine as engine_module
from veil_collector.alert.sqlite import DB_NAME

WINDOW_RULES = """
rules:
  - id: errors
    name: Error rate
    window: {type: error_rate, window: 5m, threshold: 0.1}
    destinations: [{name: ops, type: webhook, url: "http://127.0.0.1:9/hook"}]
"""


def unexported(data_dir: Any) -> int:
    with sqlite3.connect(data_dir / DB_NAME) as conn:
        return conn.execute("SELECT count(*) FROM history WHERE exported = 0").fetchone()[0]


def test_history_waits_for_clickhouse_and_is_written_once(
    settings_factory: Callable[..., Any], store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "_HISTORY_RETRY_S", 0.0)
    settings = settings_factory(RULES)
    engine = AlertEngine(settings, store)
    store.command("RENAME TABLE alerts TO alerts_away")
    errors_before = engine_module.HISTORY_EXPORT_ERRORS._value.get()
    engine.on_evaluations([evaluation(0.95)])
    [note] = engine.evaluate(T0)  # the notification is queued although its history row cannot be written
    assert engine.outbox_counts() == {"pending": 1}
    assert unexported(settings.data_dir) == 1
    assert engine_module.HISTORY_EXPORT_ERRORS._value.get() == errors_before + 1

    store.command("RENAME TABLE alerts_away TO alerts")
    engine.evaluate(T0 + 1)
    engine.evaluate(T0 + 2)
    assert unexported(settings.data_dir) == 0
    assert [row["NotificationId"] for row in engine.history("default")] == [note.id]


def test_a_failing_window_query_skips_a_turn(settings_factory: Callable[..., Any], store: Any) -> None:
    engine = AlertEngine(settings_factory(WINDOW_RULES), store)
    store.command("RENAME TABLE llm_calls TO llm_calls_away")
    before = engine_module.WINDOW_ERRORS.labels("errors")._value.get()
    assert engine.evaluate(T0) == []
    assert engine_module.WINDOW_ERRORS.labels("errors")._value.get() == before + 1
    store.command("RENAME TABLE llm_calls_away TO llm_calls")
    assert engine.evaluate(T0 + 30) == []  # evaluated again at its next turn, no error
    assert engine_module.WINDOW_ERRORS.labels("errors")._value.get() == before + 1


def test_prune_keeps_pending_rows(settings_factory: Callable[..., Any], store: Any) -> None:
    settings = settings_factory(RULES)
    engine = AlertEngine(settings, store)
    engine.on_evaluations([evaluation(0.95), evaluation(0.95, model="other")])
    engine.evaluate(T0)
    conn = sqlite3.connect(settings.data_dir / DB_NAME, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("UPDATE outbox SET state = 'delivered' WHERE rowid = (SELECT min(rowid) FROM outbox)")
    assert outbox.prune(conn, before=0) == 0  # younger than the cut-off
    assert outbox.prune(conn, before=T0 * 2) == 1
    assert outbox.counts(conn) == {"pending": 1}
