"""The ``deliveries`` table writer: every attempt is logged in batches, off the sending threads.

Sending must not wait for ClickHouse (an embedded store serializes every call behind one lock, shared with
the ingest drain), so relay workers only queue a row; one thread inserts what is queued every
``interval`` seconds. The log is an audit trail, not the source of truth (the outbox is): when ClickHouse
stays unavailable or the queue is full, rows are dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter

from veil_collector.store import Store

logger = logging.getLogger(__name__)

COLUMNS = (
    "ProjectId", "Timestamp", "NotificationId", "Fingerprint", "RuleId", "Destination", "DestinationType",
    "Attempt", "Outcome", "HttpStatus", "Error", "LatencyMs",
)  # fmt: skip

DROPPED = Counter(
    "veil_alert_delivery_log_dropped_total",
    "Delivery attempts not written to ClickHouse, by reason",
    ["reason"],
)

_INSERT_TRIES = 3
_BATCH_ROWS = 1000


class DeliveryLog:
    """Queues delivery rows (``COLUMNS`` order) and inserts them in batches on its own thread.

    Args:
        store: the ClickHouse store holding ``deliveries``.
        max_rows: rows waiting at most; more are dropped (``reason="queue_full"``).
        interval: seconds between inserts while rows trickle in.
    """

    def __init__(self, store: Store, *, max_rows: int = 10_000, interval: float = 0.2) -> None:
        self._store = store
        self._queue: queue.Queue[Sequence[Any]] = queue.Queue(maxsize=max_rows)
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, row: Sequence[Any]) -> None:
        """Queue one row; never blocks."""
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            DROPPED.labels("queue_full").inc()

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="veil-alert-delivery-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``) and stop."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            stopping = self._stopping.wait(self._interval)
            batch = self._take()
            while batch:
                self._insert(batch)
                batch = self._take()
            if stopping:
                return

    def _take(self) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = []
        while len(rows) < _BATCH_ROWS:
            try:
                rows.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return rows

    def _insert(self, rows: list[Sequence[Any]]) -> None:
        for attempt in range(1, _INSERT_TRIES + 1):
            try:
                self._store.insert("deliveries", rows, COLUMNS)
                return
            except Exception:  # ClickHouse unavailable: retry briefly, then give up on this audit batch
                if attempt == _INSERT_TRIES:
                    DROPPED.labels("store_error").inc(len(rows))
                    logger.warning(
                        "dropped %d delivery log rows: ClickHouse refused them", len(rows), exc_info=True
                    )
                    return
                time.sleep(0.5 * attempt)
