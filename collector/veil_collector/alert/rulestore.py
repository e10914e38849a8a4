"""Rules per project, persisted in the alert database; the YAML file's rules are synced in at start.

Rules from the file (``source='file'``) are owned by the file: the API reads them but refuses to change or
delete them (:class:`RuleConflict`), and a restart replaces them with what the file says now.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from veil_collector.alert.rules import Rule
from veil_collector.alert.sqlite import connect, transaction


class RuleNotFound(LookupError):
    """No rule with this id in this project."""


class RuleConflict(ValueError):
    """The change is not allowed: the id exists already, or the rule belongs to the rules file."""


class RuleStore:
    """CRUD over the ``rules`` table. Thread-safe: one connection per thread.

    Args:
        data_dir: the folder holding ``alerts.db``.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self._data_dir)
        return conn

    def sync_file_rules(self, rules: Sequence[Rule]) -> None:
        """Make the file-owned rules exactly ``rules``; API rules with the same id are replaced."""
        now = time.time()
        with transaction(self._conn()) as conn:
            conn.execute("DELETE FROM rules WHERE source = 'file'")
            conn.executemany(
                "INSERT OR REPLACE INTO rules (project_id, rule_id, source, body, updated_at) "
                "VALUES (?, ?, 'file', ?, ?)",
                [(r.project, r.id, json.dumps(r.with_secrets()), now) for r in rules],
            )

    def list_rules(self, project: str | None = None) -> list[Rule]:
        """Rules of one project (all projects when ``None``), ordered by id."""
        if project is None:
            rows = self._conn().execute("SELECT body FROM rules ORDER BY project_id, rule_id").fetchall()
        else:
            rows = (
                self._conn()
                .execute("SELECT body FROM rules WHERE project_id = ? ORDER BY rule_id", (project,))
                .fetchall()
            )
        return [Rule.model_validate_json(row["body"]) for row in rows]

    def get(self, project: str, rule_id: str) -> Rule:
        """Raises :class:`RuleNotFound`."""
        row = (
            self._conn()
            .execute("SELECT body FROM rules WHERE project_id = ? AND rule_id = ?", (project, rule_id))
            .fetchone()
        )
        if row is None:
            raise RuleNotFound(f"no alert rule {rule_id!r} in project {project!r}")
        return Rule.model_validate_json(row["body"])

    def create(self, rule: Rule) -> Rule:
        """Raises :class:`RuleConflict` when the id is taken in the rule's project."""
        try:
            with transaction(self._conn()) as conn:
                conn.execute(
                    "INSERT INTO rules (project_id, rule_id, source, body, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (rule.project, rule.id, rule.source, json.dumps(rule.with_secrets()), time.time()),
                )
        except sqlite3.IntegrityError as exc:
            raise RuleConflict(f"alert rule {rule.id!r} already exists in project {rule.project!r}") from exc
        return rule

    def replace(self, rule: Rule) -> Rule:
        """Raises :class:`RuleNotFound`, or :class:`RuleConflict` for a rule owned by the rules file."""
        with transaction(self._conn()) as conn:
            self._check_editable(conn, rule.project, rule.id)
            conn.execute(
                "UPDATE rules SET body = ?, updated_at = ? WHERE project_id = ? AND rule_id = ?",
                (json.dumps(rule.with_secrets()), time.time(), rule.project, rule.id),
            )
        return rule

    def delete(self, project: str, rule_id: str) -> None:
        """Raises :class:`RuleNotFound`, or :class:`RuleConflict` for a rule owned by the rules file."""
        with transaction(self._conn()) as conn:
            self._check_editable(conn, project, rule_id)
            conn.execute("DELETE FROM rules WHERE project_id = ? AND rule_id = ?", (project, rule_id))

    @staticmethod
    def _check_editable(conn: sqlite3.Connection, project: str, rule_id: str) -> None:
        row = conn.execute(
            "SELECT source FROM rules WHERE project_id = ? AND rule_id = ?", (project, rule_id)
        ).fetchone()
        if row is None:
            raise RuleNotFound(f"no alert rule {rule_id!r} in project {project!r}")
        if row["source"] == "file":
            raise RuleConflict(f"alert rule {rule_id!r} is defined in the rules file; edit the file instead")

    def close(self) -> None:
        """Close the calling thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
