"""Buffers guard decisions and writes them to ``guard_decisions`` in batches.

A ``POST /v1/guard`` produces a handful of rows; inserting them one request at a time would give
ClickHouse thousands of tiny parts. :class:`DecisionLog` keeps rows in a bounded buffer and one daemon
thread inserts them every ``flush_interval_s`` (or sooner once ``batch_rows`` wait). Decisions are
telemetry, not the ingest path's acknowledged data: when the buffer is full, or ClickHouse refuses a
batch, rows are dropped and counted in ``veil_guard_decisions_dropped_total`` instead of slowing callers.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

from prometheus_client import Counter

from veil_collector.records import GuardDecision
from veil_collector.store import Store

logger = logging.getLogger(__name__)

DECISIONS_DROPPED = Counter(
    "veil_guard_decisions_dropped_total",
    "Guard decision rows not written to ClickHouse, by reason.",
    ["reason"],
)


class DecisionLog:
    """A bounded, batched writer of :class:`~veil_collector.records.GuardDecision` rows.

    Args:
        store: Where ``guard_decisions`` lives.
        flush_interval_s: Longest time a row waits before it is inserted.
        batch_rows: Rows that trigger an insert before the interval is up.
        max_rows: Most rows buffered; more are dropped (counted, reason ``buffer_full``).
    """

    def __init__(
        self,
        store: Store,
        *,
        flush_interval_s: float = 1.0,
        batch_rows: int = 10_000,
        max_rows: int = 100_000,
    ) -> None:
        if not flush_interval_s > 0 or batch_rows < 1 or max_rows < batch_rows:
            raise ValueError("need flush_interval_s > 0 and 1 <= batch_rows <= max_rows")
        self._store = store
        self._interval = flush_interval_s
        self._batch_rows = batch_rows
        self._max_rows = max_rows
        self._rows: deque[GuardDecision] = deque()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="veil-guard-decisions", daemon=True)
        self._thread.start()

    def add(self, decisions: Sequence[GuardDecision]) -> None:
        """Queues rows for the next insert; never blocks on ClickHouse."""
        with self._lock:
            room = self._max_rows - len(self._rows)
            accepted = decisions[:room] if room < len(decisions) else decisions
            self._rows.extend(accepted)
            full = len(self._rows) >= self._batch_rows
        if len(accepted) < len(decisions):
            DECISIONS_DROPPED.labels("buffer_full").inc(len(decisions) - len(accepted))
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Inserts every buffered row now; returns how many were written."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = list(self._rows), deque()
            if not rows:
                return 0
            try:
                self._store.insert(GuardDecision.TABLE, [r.as_row() for r in rows], GuardDecision.COLUMNS)
            except Exception:  # ClickHouse down or refusing: the rows are lost, counted, and we go on
                logger.exception("could not insert %d guard decisions", len(rows))
                DECISIONS_DROPPED.labels("insert_failed").inc(len(rows))
                return 0
            return len(rows)

    def close(self, timeout: float = 5.0) -> None:
        """Writes what is buffered and stops the thread."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        self.flush()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()
