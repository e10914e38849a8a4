"""The alert engine: event rules on stored records, window rules on ClickHouse, the outbox relay.

Threads: the pipeline calls the :class:`~veil_collector.records.EventSink` methods, which only filter and
queue; one evaluator thread turns queued records and due window rules into alert transitions; the relay's
workers send the outbox. No HTTP request ever runs on the pipeline's thread.

Several collectors may share one ClickHouse (replicas behind a load balancer). The rules live there
(:mod:`~veil_collector.alert.rulestore`) and the evaluator reads them again every ``reload`` seconds, so a
rule created through any replica reaches every engine. Window rules are evaluated by one engine at a time,
chosen from heartbeats (:mod:`~veil_collector.alert.leader`). Alert state and the outbox stay in each
collector's SQLite database: an event rule fires on the collector that stored the record, once.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from veil_collector.alert import events, outbox, windows
from veil_collector.alert.leader import Election, new_instance_id
from veil_collector.alert.lifecycle import Lifecycle, export_history
from veil_collector.alert.notification import Notification
from veil_collector.alert.relay import DEFAULT_RETRY_SCHEDULE, Relay
from veil_collector.alert.rules import Rule, load_rules_file
from veil_collector.alert.rulestore import RuleStore
from veil_collector.alert.sqlite import connect
from veil_collector.records import Evaluation, GuardDecision, PiiFinding
from veil_collector.store import Store

if TYPE_CHECKING:
    from veil_collector.config import Settings

logger = logging.getLogger(__name__)

RECORDS_DROPPED = Counter(
    "veil_alert_records_dropped_total", "Records not evaluated by event rules because the queue was full"
)
HISTORY_EXPORT_ERRORS = Counter(
    "veil_alert_history_export_errors_total", "Failed inserts of alert history into ClickHouse (retried)"
)
RULE_RELOAD_ERRORS = Counter(
    "veil_alert_rule_reload_errors_total", "Failed reads of the shared alert rules from ClickHouse (retried)"
)
WINDOW_ERRORS = Counter(
    "veil_alert_window_errors_total", "Window rule evaluations that failed (ClickHouse error)", ["rule_id"]
)

_WAKE = object()  # queued by stop() so the evaluator notices at once
_HISTORY_RETRY_S = 5.0
_PRUNE_EVERY_S = 3600.0


class AlertEngine:
    """Evaluates a project's alert rules and delivers their notifications.

    Args:
        settings: uses ``data_dir`` (``alerts.db`` lives there) and ``alert_rules_file`` (synced into the
            shared rules at construction: a bad file raises
            :class:`~veil_collector.alert.rules.RulesFileError`).
        store: the migrated ClickHouse store (shared rules, window queries, ``alerts`` history,
            ``deliveries`` log); construction raises when it cannot be read.
        clock: "now" in Unix seconds for rule evaluation (tests drive it); the relay uses real time.
        http_timeout: seconds one delivery attempt may take.
        relay_workers: concurrent deliveries.
        retry_schedule: delays before attempts 2, 3, ... (Svix's schedule by default).
        max_attempts: attempts before a notification is dead-lettered.
        tick: the evaluator's period when no records arrive (window rules run on their own ``every``).
        reload: seconds between reads of the rules, which other collectors may change; a change made
            through this engine's ``rules`` is picked up at the next pass.
        elect: choose one engine among the collectors to evaluate window rules
            (:class:`~veil_collector.alert.leader.Election`); ``None``: on a ClickHouse server, not on
            embedded ClickHouse, which one process owns (that engine always evaluates them).
        instance_id: this engine's id in the election (:func:`~veil_collector.alert.leader.new_instance_id`
            when ``None``).
        heartbeat: seconds between heartbeats; an engine silent for three of them is replaced as leader.
        queue_size: record batches waiting for the evaluator; more are dropped and counted.
        retention: seconds finished outbox rows (delivered, failed, dead, disabled) are kept.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        http_timeout: float = 15.0,
        relay_workers: int = 4,
        retry_schedule: Sequence[float] = DEFAULT_RETRY_SCHEDULE,
        max_attempts: int | None = None,
        tick: float = 1.0,
        reload: float = 5.0,
        elect: bool | None = None,
        instance_id: str | None = None,
        heartbeat: float = 5.0,
        queue_size: int = 10_000,
        retention: float = 7 * 86400.0,
    ) -> None:
        if tick <= 0 or reload <= 0:
            raise ValueError(f"tick and reload must be positive; got {tick} and {reload}")
        self._data_dir = settings.data_dir
        self._store = store
        self._clock = clock
        self._tick = tick
        self._local = threading.local()
        self.rules = RuleStore(store)
        self.rules.import_sqlite_rules(self._conn())
        if settings.alert_rules_file is not None:
            self.rules.sync_file_rules(load_rules_file(settings.alert_rules_file))
        self._reload = reload
        # Read here, so that a store that cannot be read fails the start rather than leave the engine
        # without rules (an empty list would resolve every firing alert as an orphan).
        self._rules_revision = self.rules.revision
        self._rules = self.rules.list_rules()
        self._rules_reload_at = time.monotonic() + reload
        self._rules_stale = False
        if elect if elect is not None else not store.embedded:
            self._election: Election | None = Election(
                store, instance_id or new_instance_id(), interval=heartbeat
            )
        else:
            self._election = None
        # Until the first pass says otherwise, state of window rules in alerts.db is taken as this engine's
        # own: a follower drops it then (it may be left from a process that led).
        self._leading = True
        self._relay = Relay(
            self._data_dir,
            store,
            workers=relay_workers,
            timeout=http_timeout,
            retry_schedule=retry_schedule,
            max_attempts=max_attempts,
        )
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._eval_lock = threading.Lock()
        self._next_window: dict[tuple[str, str], float] = {}
        self._retention = retention
        self._history_retry_at = 0.0  # monotonic time; non-zero while ClickHouse refuses history rows
        self._next_prune = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the relay (releasing leases left by a previous process) and the evaluator thread."""
        if self._thread is not None:
            return
        self._relay.start()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="veil-alert-evaluator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop evaluating and sending; attempts in flight get up to ``timeout`` seconds.

        Undelivered notifications stay in the outbox; the next engine on this ``data_dir`` sends them.
        """
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._stopping.set()
            try:
                self._queue.put_nowait(_WAKE)
            except queue.Full:  # a full queue wakes the evaluator anyway
                pass
            self._thread.join(max(0.0, deadline - time.monotonic()))
            self._thread = None
        if self._election is not None:
            self._election.resign()
        self._relay.stop(max(0.0, deadline - time.monotonic()))

    # --- EventSink ------------------------------------------------------------------------------------------

    def on_evaluations(self, evaluations: Sequence[Evaluation]) -> None:
        """Queue toxicity scores for the event rules (never blocks, never raises)."""
        self._offer([e for e in evaluations if e.evaluator == "toxicity"])

    def on_pii_findings(self, findings: Sequence[PiiFinding]) -> None:
        """Queue PII the SDK missed for the event rules (never blocks, never raises)."""
        self._offer([f for f in findings if f.sdk_missed])

    def on_guard_decisions(self, decisions: Sequence[GuardDecision]) -> None:
        """Queue guard blocks for the event rules (never blocks, never raises)."""
        self._offer([d for d in decisions if d.decision == "block"])

    def _offer(self, records: list[Any]) -> None:
        if not records:
            return
        try:
            self._queue.put_nowait(records)
        except queue.Full:
            RECORDS_DROPPED.inc(len(records))

    # --- evaluation -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                first = [self._queue.get(timeout=self._tick)]
            except queue.Empty:
                first = []
            if self._stopping.is_set():
                return
            try:
                self._evaluate(None, first)
            except Exception:  # the evaluator must outlive one bad pass (a locked database, a bad rule)
                logger.exception("alert evaluation failed")

    def evaluate(self, now: float | None = None) -> list[Notification]:
        """One pass: queued records, expiring event alerts, due window rules, deleted rules.

        Returns the notifications that entered the outbox.

        The evaluator thread calls this every ``tick`` or when records arrive; tests call it with ``now``.
        """
        return self._evaluate(now, [])

    def _evaluate(self, now: float | None, taken: list[Any]) -> list[Notification]:
        with self._eval_lock:
            now = self._clock() if now is None else now
            conn = self._conn()
            lifecycle = Lifecycle(conn)
            rules = [rule for rule in self._current_rules() if rule.enabled]
            records = self._drain(taken)
            notes: list[Notification] = []
            for rule, observations in events.match(rules, records):
                notes += lifecycle.advance(rule, now, observations, complete=False)
            if notes:
                self._relay.wake()  # before the heartbeat and the window queries, which may take a while
            leading = self._lead(lifecycle, rules)
            for rule in rules:
                if rule.event is not None:
                    notes += lifecycle.expire(rule, now)
                elif leading and self._next_window.get((rule.project, rule.id), float("-inf")) <= now:
                    notes += self._evaluate_window(lifecycle, rule, now)
            notes += lifecycle.resolve_orphans({(rule.project, rule.id) for rule in rules}, now)
            if notes:
                self._relay.wake()
            self._export_history(conn)
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + _PRUNE_EVERY_S
                outbox.prune(conn, time.time() - self._retention)
            return notes

    def _lead(self, lifecycle: Lifecycle, rules: list[Rule]) -> bool:
        """Whether this engine evaluates the window rules now; a new follower drops their state."""
        leading = self._election is None or self._election.poll()
        if self._leading and not leading:
            # The leader's state is what counts now: kept here it would resolve or repeat, from stale
            # observations, alerts this engine no longer watches if it leads again.
            lifecycle.forget({(rule.project, rule.id) for rule in rules if rule.window is not None})
            self._next_window.clear()
        self._leading = leading
        return leading

    def _current_rules(self) -> list[Rule]:
        """The rules last read, read again when due or when this engine's ``rules`` changed one."""
        revision = self.rules.revision
        if revision == self._rules_revision and time.monotonic() < self._rules_reload_at:
            return self._rules
        try:
            self._rules = self.rules.list_rules()
        except Exception:  # ClickHouse down or refusing: keep evaluating the rules read last; log once
            RULE_RELOAD_ERRORS.inc()
            if not self._rules_stale:
                logger.warning(
                    "cannot read the alert rules from ClickHouse; keeping the last ones", exc_info=True
                )
            self._rules_stale = True
        else:
            if self._rules_stale:
                logger.info("alert rules are read from ClickHouse again")
            self._rules_stale = False
            self._rules_revision = revision
        self._rules_reload_at = time.monotonic() + self._reload
        return self._rules

    def _export_history(self, conn: sqlite3.Connection) -> None:
        if time.monotonic() < self._history_retry_at:
            return
        try:
            export_history(conn, self._store)
        except Exception:  # ClickHouse down or refusing: rows wait in SQLite; log once per outage
            HISTORY_EXPORT_ERRORS.inc()
            if self._history_retry_at == 0.0:
                logger.warning("cannot write alert history to ClickHouse; retrying", exc_info=True)
            self._history_retry_at = time.monotonic() + _HISTORY_RETRY_S
        else:
            if self._history_retry_at:
                logger.info("alert history is written to ClickHouse again")
            self._history_retry_at = 0.0

    def _evaluate_window(self, lifecycle: Lifecycle, rule: Rule, now: float) -> list[Notification]:
        assert rule.window is not None  # only window rules come here
        try:
            observations = windows.evaluate(self._store, rule.project, rule.window, now)
        except (
            Exception
        ):  # ClickHouse unavailable or refusing: keep the alert state, try at the next interval
            WINDOW_ERRORS.labels(rule.id).inc()
            logger.warning("window rule %s/%s could not be evaluated", rule.project, rule.id, exc_info=True)
            return []
        finally:
            self._next_window[(rule.project, rule.id)] = now + rule.every
        return lifecycle.advance(rule, now, observations, complete=True)

    def _drain(self, taken: list[Any]) -> list[Any]:
        """Records of the batches already taken plus every batch queued now."""
        batches = list(taken)
        while True:
            try:
                batches.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return [record for batch in batches if batch is not _WAKE for record in batch]

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self._data_dir)
        return conn

    # --- read side (API, CLI) -----------------------------------------------------------------------------

    def active(self, project: str) -> list[dict[str, Any]]:
        """The project's alerts now pending or firing."""
        return Lifecycle(self._conn()).active(project)

    def history(
        self,
        project: str,
        *,
        status: str | None = None,
        rule_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Rows of the ``alerts`` table for ``project``, newest first."""
        where = ["ProjectId = {project:String}"]
        params: dict[str, Any] = {"project": project, "limit": limit}
        if status is not None:
            where.append("Status = {status:String}")
            params["status"] = status
        if rule_id is not None:
            where.append("RuleId = {rule_id:String}")
            params["rule_id"] = rule_id
        if since is not None:
            where.append("Timestamp >= fromUnixTimestamp64Milli({since:Int64})")
            params["since"] = round(since.astimezone(timezone.utc).timestamp() * 1000)
        result = self._store.query(
            "SELECT Timestamp, RuleId, RuleName, Fingerprint, Status, Severity, Labels, Annotations, Value, "
            f"StartsAt, EndsAt, NotificationId FROM alerts WHERE {' AND '.join(where)} "
            "ORDER BY Timestamp DESC, NotificationId LIMIT {limit:UInt32}",
            params,
        )
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def outbox_counts(self) -> dict[str, int]:
        """Outbox rows per state (``pending``, ``delivered``, ``failed``, ``dead``, ``disabled``)."""
        return outbox.counts(self._conn())
