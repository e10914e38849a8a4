"""The alert engine's local SQLite database: alert state, the notification outbox, history to export.

One file (``<data_dir>/alerts.db``) so that a firing, its outbox rows and the alert state commit in one
transaction; history rows wait in ``history`` until ClickHouse's ``alerts`` table has them. WAL with
``synchronous=FULL``: a committed outbox row survives a power loss, not only a process crash. Each thread
opens its own connection (sqlite3 connections are not shared between threads).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DB_NAME = "alerts.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state (
    fingerprint TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    labels TEXT NOT NULL,
    status TEXT NOT NULL,
    pending_since REAL NOT NULL,
    starts_at REAL,
    last_seen_at REAL NOT NULL,
    last_sent_at REAL,
    send_count INTEGER NOT NULL DEFAULT 0,
    value REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    rule TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_state_rule ON alert_state (project_id, rule_id);
CREATE TABLE IF NOT EXISTS outbox (
    notification_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    destination_type TEXT NOT NULL,
    destination_key TEXT NOT NULL,
    project_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT,
    headers TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (notification_id, destination)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS history (
    notification_id TEXT PRIMARY KEY,
    row TEXT NOT NULL,
    exported INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS disabled_destinations (
    destination_key TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    disabled_at REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


def connect(data_dir: Path) -> sqlite3.Connection:
    """Open (and create) ``<data_dir>/alerts.db`` for the calling thread, schema applied.

    The connection is in autocommit mode; callers group writes with ``with transaction(conn):``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DB_NAME
    fresh = not path.exists()
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=True)
    if fresh:
        # The outbox holds destination secrets: readable by the collector's user only.
        os.chmod(path, 0o600)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(_SCHEMA)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): one writer at a time, no deadlock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
