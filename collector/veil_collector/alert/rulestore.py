"""Rules per project, kept in ClickHouse's ``alert_rules`` table so that every collector replica shares them.

The YAML file's rules are synced in at start. Rules from the file (``source='file'``) are owned by the file:
the API reads them but refuses to change or delete them (:class:`RuleConflict`), and a start replaces them
with what the file says now.

ClickHouse has no transactions: each change appends a row with a higher ``Version`` (reads use ``FINAL``,
so the newest row of a rule wins), and a delete appends a tombstone (``Deleted = 1``). The existence checks
behind :class:`RuleConflict` and :class:`RuleNotFound` are exact within one process (a lock serializes its
writes); two replicas changing the same rule at the same instant both succeed and the later ``Version``
wins, which is what a user racing against themselves through a load balancer can expect.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from veil_collector.alert.rules import Rule
from veil_collector.store import Store

_COLUMNS = ("ProjectId", "RuleId", "Source", "Body", "UpdatedAt", "Version", "Deleted")
# Rows every collector must see soon (rules, heartbeats): on a cluster an insert into a Distributed table
# then returns only once the shard holds the row, rather than forwarding it in the background. A single
# server ignores the setting.
SYNC_INSERT = {"insert_distributed_sync": 1}


class RuleNotFound(LookupError):
    """No rule with this id in this project."""


class RuleConflict(ValueError):
    """The change is not allowed: the id exists already, or the rule belongs to the rules file."""


class RuleStore:
    """CRUD over the ``alert_rules`` table. Thread-safe.

    Args:
        store: the migrated ClickHouse store that every collector of the deployment uses.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._last_version = 0
        self._revision = 0

    @property
    def revision(self) -> int:
        """Counts the changes made through this object, so that its engine reloads at once after one."""
        return self._revision

    def sync_file_rules(self, rules: Sequence[Rule]) -> None:
        """Make the file-owned rules exactly ``rules``; API rules with the same id are replaced.

        Only differences are written, so replicas starting with the same file add no rows.
        """
        with self._lock:
            current = {(r.project, r.id): r for r in self._select()}
            wanted = {(r.project, r.id): r for r in rules}
            rows = [
                self._row(rule, deleted=True)
                for key, rule in current.items()
                if rule.source == "file" and key not in wanted
            ]
            rows += [
                self._row(rule)
                for key, rule in wanted.items()
                if key not in current or _body(current[key]) != _body(rule)
            ]
            self._write(rows)

    def import_sqlite_rules(self, conn: sqlite3.Connection) -> int:
        """Move the API's rules out of a collector's ``alerts.db``, where versions before the shared table
        kept them; returns how many were added. A rule whose id the shared table already holds is skipped
        (replicas upgraded one after another each bring their own rules). The old table is dropped, so a
        rule deleted later is not brought back.
        """
        if (
            conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rules'").fetchone()
            is None
        ):
            return 0
        with self._lock:
            current = {(r.project, r.id) for r in self._select()}
            legacy = [
                Rule.model_validate_json(body)
                for (body,) in conn.execute("SELECT body FROM rules WHERE source = 'api' ORDER BY rowid")
            ]
            rows = [self._row(rule) for rule in legacy if (rule.project, rule.id) not in current]
            self._write(rows)
        conn.execute("DROP TABLE rules")
        return len(rows)

    def list_rules(self, project: str | None = None) -> list[Rule]:
        """Rules of one project (all projects when ``None``), ordered by project and id."""
        return self._select(project)

    def get(self, project: str, rule_id: str) -> Rule:
        """Raises :class:`RuleNotFound`."""
        found = self._select(project, rule_id)
        if not found:
            raise RuleNotFound(f"no alert rule {rule_id!r} in project {project!r}")
        return found[0]

    def create(self, rule: Rule) -> Rule:
        """Raises :class:`RuleConflict` when the id is taken in the rule's project."""
        with self._lock:
            if self._select(rule.project, rule.id):
                raise RuleConflict(f"alert rule {rule.id!r} already exists in project {rule.project!r}")
            self._write([self._row(rule)])
        return rule

    def replace(self, rule: Rule) -> Rule:
        """Raises :class:`RuleNotFound`, or :class:`RuleConflict` for a rule owned by the rules file."""
        with self._lock:
            self._editable(rule.project, rule.id)
            self._write([self._row(rule)])
        return rule

    def delete(self, project: str, rule_id: str) -> None:
        """Raises :class:`RuleNotFound`, or :class:`RuleConflict` for a rule owned by the rules file."""
        with self._lock:
            rule = self._editable(project, rule_id)
            self._write([self._row(rule, deleted=True)])

    def _editable(self, project: str, rule_id: str) -> Rule:
        found = self._select(project, rule_id)
        if not found:
            raise RuleNotFound(f"no alert rule {rule_id!r} in project {project!r}")
        if found[0].source == "file":
            raise RuleConflict(f"alert rule {rule_id!r} is defined in the rules file; edit the file instead")
        return found[0]

    def _select(self, project: str | None = None, rule_id: str | None = None) -> list[Rule]:
        where = ["NOT Deleted"]
        params: dict[str, Any] = {}
        if project is not None:
            where.append("ProjectId = {project:String}")
            params["project"] = project
        if rule_id is not None:
            where.append("RuleId = {rule_id:String}")
            params["rule_id"] = rule_id
        # FINAL before WHERE: the filter sees only each rule's newest row, so a tombstone hides the rule.
        result = self._store.query(
            f"SELECT Body FROM alert_rules FINAL WHERE {' AND '.join(where)} ORDER BY ProjectId, RuleId",
            params,
        )
        return [Rule.model_validate_json(body) for (body,) in result.result_rows]

    def _row(self, rule: Rule, *, deleted: bool = False) -> list[Any]:
        # Versions are nanoseconds, strictly increasing within this process: a delete right after a create
        # must not share its version (ReplacingMergeTree would then keep either row).
        self._last_version = max(time.time_ns(), self._last_version + 1)
        now = datetime.fromtimestamp(self._last_version / 1e9, tz=timezone.utc)
        body = "" if deleted else _body(rule)
        return [rule.project, rule.id, rule.source, body, now, self._last_version, int(deleted)]

    def _write(self, rows: list[list[Any]]) -> None:
        if rows:
            self._store.insert("alert_rules", rows, _COLUMNS, settings=SYNC_INSERT)
            self._revision += 1


def _body(rule: Rule) -> str:
    return json.dumps(rule.with_secrets(), sort_keys=True)
