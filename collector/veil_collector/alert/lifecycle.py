"""Alert lifecycle: pending → firing → resolved per rule and label set, with outbox and history in one commit.

A window rule reports every breaching label set at each evaluation (``complete=True``): a new set waits
``for`` seconds as *pending*, then fires; a firing set that stops breaching resolves. An event rule reports
only the sets that just saw a record (``complete=False``) and resolves after ``resolve_after`` seconds of
quiet (:meth:`Lifecycle.expire`). While firing an alert is not sent again until ``repeat_interval`` has
passed. Every firing, repeat and resolution gets a deterministic notification id; its outbox rows, the new
state and the history row commit in one SQLite transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prometheus_client import Counter

from veil_collector.alert import outbox
from veil_collector.alert.notification import Notification, Status, fingerprint, notification_id
from veil_collector.alert.rules import Rule
from veil_collector.alert.sqlite import transaction
from veil_collector.store import Store

logger = logging.getLogger(__name__)

TRANSITIONS = Counter("veil_alert_transitions_total", "Alert notifications created, by status", ["status"])

_HISTORY_COLUMNS = (
    "ProjectId", "Timestamp", "RuleId", "RuleName", "Fingerprint", "Status", "Severity", "Labels",
    "Annotations", "Value", "StartsAt", "EndsAt", "NotificationId",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Observation:
    """One label set breaching a rule's condition now.

    Attributes:
        labels: the group labels (``service``, ``model``, ``user``, ...), part of the fingerprint.
        value: the number compared with the threshold (a rate, a latency, a score, a count).
        values: other numbers for the notification (sample count, background rate).
        annotations: extra text for the notification (the latest trace id of an event).
    """

    labels: dict[str, str]
    value: float
    values: dict[str, float] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _format(template: str, fields: Mapping[str, Any]) -> str:
    try:
        return string.Formatter().vformat(template, (), _Fields(fields))
    except (ValueError, IndexError):  # a stray brace in user text: keep the text as written
        return template


def build_notification(
    rule: Rule,
    *,
    group_labels: Mapping[str, str],
    status: Status,
    value: float,
    starts_at: float,
    sequence: int,
    ends_at: float | None = None,
    values: Mapping[str, float] | None = None,
    extra_annotations: Mapping[str, str] | None = None,
) -> Notification:
    """A notification of ``rule`` for one label set (labels: rule labels, group labels, identity labels)."""
    fp = fingerprint(rule.project, rule.id, dict(group_labels))
    labels = {
        **rule.labels,
        **group_labels,
        "alertname": rule.name,
        "severity": rule.severity,
        "project": rule.project,
        "rule_id": rule.id,
    }
    condition = rule.condition
    threshold = getattr(condition, "threshold", None)
    where = ", ".join(f"{k}={v}" for k, v in sorted(group_labels.items()))
    summary = f"{rule.name}{f' ({where})' if where else ''}: {condition.type} {value:.4g}"
    if threshold is not None:
        summary += f" (threshold {threshold:g})"
    fields = {**labels, "value": f"{value:.4g}", "threshold": threshold}
    annotations = {"summary": summary, **dict(extra_annotations or {})}
    annotations.update({key: _format(text, fields) for key, text in rule.annotations.items()})
    return Notification(
        id=notification_id(fp, status, starts_at, sequence),
        project_id=rule.project,
        rule_id=rule.id,
        rule_name=rule.name,
        fingerprint=fp,
        status=status,
        severity=rule.severity,
        labels=labels,
        annotations=annotations,
        value=value,
        starts_at=starts_at,
        ends_at=ends_at,
        values=dict(values or {}),
        sequence=sequence,
    )


class Lifecycle:
    """Owns the ``alert_state`` table. Not thread-safe: one evaluator thread drives it.

    Args:
        conn: the evaluator thread's connection to ``alerts.db``.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def advance(
        self, rule: Rule, now: float, observations: Iterable[Observation], *, complete: bool
    ) -> list[Notification]:
        """Apply what ``rule`` observes at ``now``; returns the notifications that entered the outbox.

        Args:
            complete: ``observations`` is every breaching label set (window rules): a firing set missing
                from it resolves and a pending one is forgotten.
        """
        notes: list[Notification] = []
        with transaction(self._conn) as conn:
            states = {
                row["fingerprint"]: dict(row)
                for row in conn.execute(
                    "SELECT * FROM alert_state WHERE project_id = ? AND rule_id = ?", (rule.project, rule.id)
                )
            }
            seen: set[str] = set()
            for obs in observations:
                fp = fingerprint(rule.project, rule.id, obs.labels)
                seen.add(fp)
                state = states.get(fp)
                if state is None:
                    state = {
                        "status": "pending",
                        "pending_since": now,
                        "starts_at": None,
                        "last_sent_at": None,
                    }
                    state["send_count"] = 0
                note = self._step(rule, now, state, obs)
                if note is not None:
                    notes.append(note)
                self._save(conn, rule, fp, obs, state, now)
            if complete:
                for fp, state in states.items():
                    if fp in seen:
                        continue
                    if state["status"] == "firing":
                        notes.append(self._resolve(conn, rule, state, now))
                    else:
                        conn.execute("DELETE FROM alert_state WHERE fingerprint = ?", (fp,))
            self._enqueue(conn, rule, notes)
        return notes

    def expire(self, rule: Rule, now: float) -> list[Notification]:
        """Event rules: resolve label sets quiet for ``resolve_after``; re-send the others when due."""
        notes: list[Notification] = []
        with transaction(self._conn) as conn:
            rows = conn.execute(
                "SELECT * FROM alert_state WHERE project_id = ? AND rule_id = ? AND status = 'firing'",
                (rule.project, rule.id),
            ).fetchall()
            for row in rows:
                state = dict(row)
                if now - state["last_seen_at"] >= rule.resolve_after:
                    notes.append(self._resolve(conn, rule, state, now))
                elif now - state["last_sent_at"] >= rule.repeat_interval:
                    state["send_count"] += 1
                    state["last_sent_at"] = now
                    notes.append(self._notification(rule, state, "firing"))
                    conn.execute(
                        "UPDATE alert_state SET send_count = ?, last_sent_at = ? WHERE fingerprint = ?",
                        (state["send_count"], now, state["fingerprint"]),
                    )
            self._enqueue(conn, rule, notes)
        return notes

    def resolve_orphans(self, live: set[tuple[str, str]], now: float) -> list[Notification]:
        """Resolve alerts of rules that were deleted or disabled, through the destinations they fired to."""
        notes: list[Notification] = []
        with transaction(self._conn) as conn:
            for row in conn.execute("SELECT * FROM alert_state").fetchall():
                if (row["project_id"], row["rule_id"]) in live:
                    continue
                state = dict(row)
                if state["status"] != "firing":
                    conn.execute("DELETE FROM alert_state WHERE fingerprint = ?", (state["fingerprint"],))
                    continue
                rule = Rule.model_validate_json(state["rule"])
                note = self._resolve(conn, rule, state, now)
                self._enqueue(conn, rule, [note])
                notes.append(note)
        return notes

    def forget(self, rules: set[tuple[str, str]]) -> None:
        """Drop the state of these ``(project, rule id)`` rules without a notification: another collector
        evaluates them now, and its notifications are the ones that count."""
        with transaction(self._conn) as conn:
            conn.executemany("DELETE FROM alert_state WHERE project_id = ? AND rule_id = ?", sorted(rules))

    def active(self, project: str | None = None) -> list[dict[str, Any]]:
        """Alerts now pending or firing (rows of ``alert_state`` without the rule snapshot)."""
        sql = "SELECT * FROM alert_state" + (" WHERE project_id = ?" if project is not None else "")
        rows = self._conn.execute(sql, (project,) if project is not None else ()).fetchall()
        return [{k: v for k, v in dict(row).items() if k != "rule"} for row in rows]

    # --- one state ----------------------------------------------------------------------------------------

    def _step(self, rule: Rule, now: float, state: dict[str, Any], obs: Observation) -> Notification | None:
        state["labels"] = json.dumps(obs.labels, sort_keys=True)
        state["value"] = obs.value
        state["detail"] = json.dumps({"values": obs.values, "annotations": obs.annotations})
        state["last_seen_at"] = now
        if state["status"] == "pending" and now - state["pending_since"] >= rule.for_:
            state.update(status="firing", starts_at=now, last_sent_at=now, send_count=1)
            return self._notification(rule, state, "firing")
        if state["status"] == "firing" and now - state["last_sent_at"] >= rule.repeat_interval:
            state["send_count"] += 1
            state["last_sent_at"] = now
            return self._notification(rule, state, "firing")
        return None

    @staticmethod
    def _save(
        conn: sqlite3.Connection, rule: Rule, fp: str, obs: Observation, state: dict[str, Any], now: float
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO alert_state (fingerprint, project_id, rule_id, labels, status, "
            "pending_since, starts_at, last_seen_at, last_sent_at, send_count, value, detail, rule) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                fp,
                rule.project,
                rule.id,
                state["labels"],
                state["status"],
                state["pending_since"],
                state["starts_at"],
                now,
                state["last_sent_at"],
                state["send_count"],
                obs.value,
                state["detail"],
                json.dumps(rule.with_secrets()),
            ),
        )

    def _resolve(
        self, conn: sqlite3.Connection, rule: Rule, state: dict[str, Any], now: float
    ) -> Notification:
        conn.execute("DELETE FROM alert_state WHERE fingerprint = ?", (state["fingerprint"],))
        return self._notification(rule, state, "resolved", ends_at=now)

    @staticmethod
    def _notification(
        rule: Rule, state: dict[str, Any], status: Status, ends_at: float | None = None
    ) -> Notification:
        detail = json.loads(state["detail"])
        return build_notification(
            rule,
            group_labels=json.loads(state["labels"]),
            status=status,
            value=state["value"],
            starts_at=state["starts_at"],
            sequence=state["send_count"] if status == "firing" else 0,
            ends_at=ends_at,
            values=detail["values"],
            extra_annotations=detail["annotations"],
        )

    @staticmethod
    def _enqueue(conn: sqlite3.Connection, rule: Rule, notes: Sequence[Notification]) -> None:
        for note in notes:
            outbox.enqueue(conn, note, list(rule.destinations))
            if note.status == "resolved" or note.sequence == 1:  # a state change, not a repeat
                conn.execute(
                    "INSERT OR IGNORE INTO history (notification_id, row) VALUES (?, ?)",
                    (note.id, json.dumps(_history_row(note))),
                )
            TRANSITIONS.labels(note.status).inc()


def _history_row(note: Notification) -> dict[str, Any]:
    return {
        "ProjectId": note.project_id,
        "Timestamp": note.ends_at if note.ends_at is not None else note.starts_at,
        "RuleId": note.rule_id,
        "RuleName": note.rule_name,
        "Fingerprint": note.fingerprint,
        "Status": note.status,
        "Severity": note.severity,
        "Labels": note.labels,
        "Annotations": note.annotations,
        "Value": note.value,
        "StartsAt": note.starts_at,
        "EndsAt": note.ends_at,
        "NotificationId": note.id,
    }


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def export_history(conn: sqlite3.Connection, store: Store, *, batch: int = 1000) -> int:
    """Copy history rows not yet in ClickHouse's ``alerts`` table; returns how many were copied.

    The insert carries a deduplication token derived from its notification ids, so a crash between the
    insert and the ``exported`` mark does not write a row twice.

    Raises:
        Exception: whatever the store raised; the rows stay in SQLite for the next call.
    """
    rows = conn.execute(
        "SELECT notification_id, row FROM history WHERE exported = 0 ORDER BY rowid LIMIT ?", (batch,)
    ).fetchall()
    if not rows:
        return 0
    ids = [row["notification_id"] for row in rows]
    data = []
    for row in rows:
        item = json.loads(row["row"])
        for key in ("Timestamp", "StartsAt", "EndsAt"):
            item[key] = _utc(item[key])
        data.append([item[column] for column in _HISTORY_COLUMNS])
    token = "veil-alerts:" + hashlib.sha256("|".join(ids).encode()).hexdigest()
    settings = {"insert_deduplication_token": token, "insert_deduplicate": 1}
    store.insert("alerts", data, _HISTORY_COLUMNS, settings=settings)
    with transaction(conn):
        conn.executemany("UPDATE history SET exported = 1 WHERE notification_id = ?", [(i,) for i in ids])
    return len(ids)
