"""The persistent notification outbox: one row per (notification, destination), in ``alerts.db``.

Rows enter inside the transaction that records the alert transition (``INSERT OR IGNORE`` on the
deterministic notification id, so re-evaluating after a crash never doubles a delivery). The relay leases a
due row, sends it, and moves it to ``delivered``, back to ``pending`` with a later ``next_attempt_at``, or to
a final ``failed`` (4xx), ``dead`` (attempts exhausted) or ``disabled`` (the destination answered 410).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from veil_collector.alert.notification import Notification, render
from veil_collector.alert.rules import Destination, WebhookDestination
from veil_collector.alert.sqlite import transaction

FinalState = Literal["delivered", "failed", "dead", "disabled"]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A leased outbox row: everything needed to send it without looking up the rule."""

    notification_id: str
    destination: str
    destination_type: str
    destination_key: str
    project_id: str
    rule_id: str
    fingerprint: str
    url: str
    secret: str | None
    headers: dict[str, str]
    body: bytes
    attempts: int


def destination_url(destination: Destination) -> str:
    url = destination.url
    return url.get_secret_value() if isinstance(url, SecretStr) else str(url)


def destination_key(destination_type: str, url: str) -> str:
    """Identifies an endpoint across rules: a 410 from it disables it for every rule that uses it."""
    return hashlib.sha256(f"{destination_type} {url}".encode()).hexdigest()[:16]


def item_for(notification: Notification, destination: Destination) -> OutboxItem:
    """The outbox row of one notification for one destination, body rendered (not yet stored)."""
    url = destination_url(destination)
    secret = None
    headers: dict[str, str] = {}
    if isinstance(destination, WebhookDestination):
        secret = destination.secret.get_secret_value() if destination.secret else None
        headers = dict(destination.headers)
    body = json.dumps(render(notification, destination), separators=(",", ":"), sort_keys=True)
    return OutboxItem(
        notification_id=notification.id,
        destination=destination.name,
        destination_type=destination.type,
        destination_key=destination_key(destination.type, url),
        project_id=notification.project_id,
        rule_id=notification.rule_id,
        fingerprint=notification.fingerprint,
        url=url,
        secret=secret,
        headers=headers,
        body=body.encode(),
        attempts=0,
    )


def enqueue(conn: sqlite3.Connection, notification: Notification, destinations: list[Destination]) -> int:
    """Add one row per destination (inside the caller's transaction); returns how many were new."""
    added = 0
    for destination in destinations:
        item = item_for(notification, destination)
        cursor = conn.execute(
            "INSERT OR IGNORE INTO outbox (notification_id, destination, destination_type, destination_key, "
            "project_id, rule_id, fingerprint, url, secret, headers, body, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                item.notification_id,
                item.destination,
                item.destination_type,
                item.destination_key,
                item.project_id,
                item.rule_id,
                item.fingerprint,
                item.url,
                item.secret,
                json.dumps(item.headers),
                item.body.decode(),
                time.time(),
            ),
        )
        added += cursor.rowcount
    return added


def release_leases(conn: sqlite3.Connection) -> None:
    """Make every leased row due again: at start-up no attempt of ours is in flight."""
    conn.execute("UPDATE outbox SET lease_until = 0 WHERE state = 'pending' AND lease_until > 0")


def lease(conn: sqlite3.Connection, now: float, lease_s: float) -> OutboxItem | None:
    """Take the oldest due row for ``lease_s`` seconds; ``None`` when nothing is due."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT rowid, * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ? "
            "AND lease_until <= ? ORDER BY next_attempt_at, created_at LIMIT 1",
            (now, now),
        ).fetchone()
        if row is not None:
            conn.execute("UPDATE outbox SET lease_until = ? WHERE rowid = ?", (now + lease_s, row["rowid"]))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if row is None:
        return None
    return OutboxItem(
        notification_id=row["notification_id"],
        destination=row["destination"],
        destination_type=row["destination_type"],
        destination_key=row["destination_key"],
        project_id=row["project_id"],
        rule_id=row["rule_id"],
        fingerprint=row["fingerprint"],
        url=row["url"],
        secret=row["secret"],
        headers=json.loads(row["headers"]),
        body=row["body"].encode(),
        attempts=row["attempts"],
    )


def next_due(conn: sqlite3.Connection) -> float | None:
    """When the earliest pending row becomes due (``None`` when none is pending)."""
    row = conn.execute(
        "SELECT min(max(next_attempt_at, lease_until)) AS due FROM outbox WHERE state = 'pending'"
    ).fetchone()
    return row["due"]


def finish(conn: sqlite3.Connection, item: OutboxItem, state: FinalState, attempts: int, error: str) -> None:
    conn.execute(
        "UPDATE outbox SET state = ?, attempts = ?, lease_until = 0, last_error = ? "
        "WHERE notification_id = ? AND destination = ?",
        (state, attempts, error, item.notification_id, item.destination),
    )


def reschedule(conn: sqlite3.Connection, item: OutboxItem, attempts: int, at: float, error: str) -> None:
    conn.execute(
        "UPDATE outbox SET attempts = ?, next_attempt_at = ?, lease_until = 0, last_error = ? "
        "WHERE notification_id = ? AND destination = ?",
        (attempts, at, error, item.notification_id, item.destination),
    )


def is_disabled(conn: sqlite3.Connection, key: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM disabled_destinations WHERE destination_key = ?", (key,)).fetchone()
        is not None
    )


def disable(conn: sqlite3.Connection, item: OutboxItem, now: float, reason: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO disabled_destinations (destination_key, url, disabled_at, reason) "
        "VALUES (?, ?, ?, ?)",
        (item.destination_key, item.url, now, reason),
    )


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Delete finished rows created before ``before`` (Unix seconds) and exported history; returns rows."""
    with transaction(conn):
        removed = conn.execute(
            "DELETE FROM outbox WHERE state != 'pending' AND created_at < ?", (before,)
        ).rowcount
        conn.execute("DELETE FROM history WHERE exported = 1")
    return removed


def disabled_destinations(conn: sqlite3.Connection) -> list[dict[str, object]]:
    """Endpoints switched off by a 410: ``destination_key``, ``url``, ``disabled_at``, ``reason``."""
    rows = conn.execute("SELECT * FROM disabled_destinations ORDER BY disabled_at").fetchall()
    return [dict(row) for row in rows]


def enable(conn: sqlite3.Connection, key: str) -> bool:
    """Switch a disabled endpoint back on (new notifications go to it again); False if it was not off."""
    with transaction(conn):
        return (
            conn.execute("DELETE FROM disabled_destinations WHERE destination_key = ?", (key,)).rowcount > 0
        )


def replay(conn: sqlite3.Connection, *, notification_id: str | None = None) -> int:
    """Make ``dead``, ``failed`` and ``disabled`` rows (all, or one notification's) pending again.

    Attempts start over; rows whose destination is still disabled are marked ``disabled`` again unsent.

    The rows keep their notification id, so a receiver that did get an earlier attempt can drop the replay.
    """
    sql = "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0, lease_until = 0 "
    sql += "WHERE state IN ('dead', 'failed', 'disabled')"
    params: tuple[str, ...] = ()
    if notification_id is not None:
        sql += " AND notification_id = ?"
        params = (notification_id,)
    with transaction(conn):
        return conn.execute(sql, params).rowcount


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per state, e.g. ``{"pending": 2, "delivered": 10}``."""
    return {
        row["state"]: row["n"]
        for row in conn.execute("SELECT state, count(*) AS n FROM outbox GROUP BY state")
    }
