"""The relay: worker threads that lease due outbox rows and send them, at least once, with retries.

Outcome of one attempt (each is a row in ClickHouse's ``deliveries`` table):

* 2xx → ``delivered``;
* 410 → ``disabled``: the destination is switched off for every rule, its pending rows are not sent;
* 429, 5xx, 3xx (redirects are not followed), timeouts and network errors → ``retry`` after the next step of
  the backoff schedule with ±20 % jitter, or after ``Retry-After`` (capped) when the answer carries one;
  ``dead`` once ``max_attempts`` attempts failed;
* any other 4xx → ``failed`` (the request itself is wrong; sending it again cannot help).

A row is leased before it is sent; a crash leaves the lease behind, and the next start releases it, so the
notification is sent again with the same ``webhook-id``.
"""

from __future__ import annotations

import email.utils
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import httpx
from prometheus_client import Counter, Histogram

from veil_collector.alert import outbox
from veil_collector.alert.deliverylog import DeliveryLog
from veil_collector.alert.outbox import OutboxItem
from veil_collector.alert.signing import signature_headers
from veil_collector.alert.sqlite import connect, transaction
from veil_collector.store import Store

logger = logging.getLogger(__name__)

# Svix / Standard Webhooks schedule: the delay before attempt 2, 3, ... (the first attempt is immediate).
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
USER_AGENT = "Veil-Alerts/1"

ATTEMPTS = Counter(
    "veil_alert_delivery_attempts_total", "Notification delivery attempts, by destination type and outcome",
    ["destination_type", "outcome"],
)  # fmt: skip
ATTEMPT_SECONDS = Histogram(
    "veil_alert_delivery_seconds", "Duration of one delivery attempt", ["destination_type"]
)

Outcome = Literal["delivered", "retry", "failed", "dead", "disabled"]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one HTTP attempt came back with: a status (0 for no response) and headers."""

    status: int
    error: str
    retry_after: float | None
    latency_ms: float


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta seconds or an HTTP date); ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def classify(status: int) -> Literal["delivered", "retry", "failed", "disabled"]:
    """The outcome of an HTTP status (0: no response at all) before the attempt limit is applied."""
    if 200 <= status < 300:
        return "delivered"
    if status == 410:
        return "disabled"
    if status == 429 or status == 0 or status >= 500 or 300 <= status < 400:
        return "retry"
    return "failed"


def send(client: httpx.Client, item: OutboxItem, now: float) -> AttemptResult:
    """POST one outbox row; never raises for HTTP or network trouble (it is reported in the result)."""
    headers = {"content-type": "application/json", "user-agent": USER_AGENT, **item.headers}
    if item.destination_type == "webhook":
        headers.update(signature_headers(item.secret, item.notification_id, int(now), item.body))
    started = time.perf_counter()
    try:
        response = client.post(item.url, content=item.body, headers=headers)
    except httpx.HTTPError as exc:
        return AttemptResult(
            0, f"{type(exc).__name__}: {exc}"[:500], None, (time.perf_counter() - started) * 1000
        )
    latency_ms = (time.perf_counter() - started) * 1000
    error = "" if response.is_success else f"HTTP {response.status_code}: {response.text[:300]}"
    retry_after = parse_retry_after(response.headers.get("retry-after"), now)
    return AttemptResult(response.status_code, error, retry_after, latency_ms)


class Relay:
    """Sends the outbox on ``workers`` threads until :meth:`stop`.

    Args:
        data_dir: folder of ``alerts.db``.
        store: where attempts are logged (``deliveries``, through a :class:`DeliveryLog`).
        workers: concurrent sends; a slow destination occupies one worker, not the whole relay.
        timeout: seconds one HTTP attempt may take (connect, read and write).
        retry_schedule: delays before attempts 2, 3, ...; the last one repeats if attempts remain.
        max_attempts: attempts before a row goes ``dead`` (default: one more than the schedule's length).
        max_retry_after: cap on a destination's ``Retry-After``, in seconds.
        jitter: relative spread of each backoff delay (0.2 = ±20 %).
    """

    def __init__(
        self,
        data_dir: Path,
        store: Store,
        *,
        workers: int = 4,
        timeout: float = 15.0,
        retry_schedule: Sequence[float] = DEFAULT_RETRY_SCHEDULE,
        max_attempts: int | None = None,
        max_retry_after: float = 3600.0,
        jitter: float = 0.2,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1; got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive; got {timeout}")
        if not retry_schedule or any(d < 0 for d in retry_schedule):
            raise ValueError("retry_schedule needs at least one non-negative delay")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1); got {jitter}")
        self._data_dir = data_dir
        self._log = DeliveryLog(store)
        self._workers = workers
        self._timeout = timeout
        self._schedule = tuple(float(d) for d in retry_schedule)
        self._max_attempts = max_attempts if max_attempts is not None else len(self._schedule) + 1
        if self._max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1; got {max_attempts}")
        self._max_retry_after = max_retry_after
        self._jitter = jitter
        self._wakeup = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Release leases a previous process left behind, then start the workers."""
        conn = connect(self._data_dir)
        try:
            with transaction(conn):
                outbox.release_leases(conn)
        finally:
            conn.close()
        self._stopping.clear()
        self._log.start()
        for n in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"veil-alert-relay-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """New rows are in the outbox: stop waiting."""
        with self._wakeup:
            self._wakeup.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking new rows and wait up to ``timeout`` seconds for attempts in flight."""
        self._stopping.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            logger.warning("%d alert relay workers still sending after %.1fs", len(self._threads), timeout)
        self._log.stop(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        conn = connect(self._data_dir)
        client = httpx.Client(timeout=self._timeout, follow_redirects=False)
        try:
            while not self._stopping.is_set():
                try:
                    worked = self._step(conn, client)
                except Exception:  # a worker must outlive a bad row or a locked database; the row is retried
                    logger.exception("alert relay step failed")
                    worked = False
                if not worked:
                    self._idle(conn)
        finally:
            client.close()
            conn.close()

    def _idle(self, conn: sqlite3.Connection) -> None:
        due = outbox.next_due(conn)
        wait = 1.0 if due is None else min(1.0, max(0.0, due - time.time()))
        if wait > 0:
            with self._wakeup:
                self._wakeup.wait(wait)

    def _step(self, conn: sqlite3.Connection, client: httpx.Client) -> bool:
        now = time.time()
        item = outbox.lease(conn, now, lease_s=self._timeout + 30.0)
        if item is None:
            return False
        if outbox.is_disabled(conn, item.destination_key):
            with transaction(conn):
                outbox.finish(conn, item, "disabled", item.attempts, "destination disabled (it answered 410)")
            self._record(item, item.attempts, "disabled", AttemptResult(0, "destination disabled", None, 0.0))
            return True
        result = send(client, item, now)
        attempt = item.attempts + 1
        outcome: Outcome = classify(result.status)
        with transaction(conn):
            if outcome == "retry" and attempt >= self._max_attempts:
                outcome = "dead"
            if outcome == "retry":
                outbox.reschedule(
                    conn, item, attempt, time.time() + self._delay(attempt, result), result.error
                )
            else:
                outbox.finish(conn, item, outcome, attempt, result.error)
            if outcome == "disabled":
                outbox.disable(conn, item, now, result.error)
        if outcome == "disabled":
            logger.warning("alert destination %s (%s) answered 410: disabled", item.destination, item.url)
        elif outcome == "dead":
            logger.error(
                "notification %s to %s gave up after %d attempts: %s",
                item.notification_id, item.destination, attempt, result.error,
            )  # fmt: skip
        self._record(item, attempt, outcome, result)
        return True

    def _delay(self, attempt: int, result: AttemptResult) -> float:
        if result.retry_after is not None:
            return min(result.retry_after, self._max_retry_after)
        base = self._schedule[min(attempt, len(self._schedule)) - 1]
        return base * random.uniform(1 - self._jitter, 1 + self._jitter)

    def _record(self, item: OutboxItem, attempt: int, outcome: Outcome, result: AttemptResult) -> None:
        ATTEMPTS.labels(item.destination_type, outcome).inc()
        ATTEMPT_SECONDS.labels(item.destination_type).observe(result.latency_ms / 1000)
        row = (
            item.project_id, datetime.now(tz=timezone.utc), item.notification_id, item.fingerprint,
            item.rule_id, item.destination, item.destination_type, attempt, outcome, result.status,
            result.error, result.latency_ms,
        )  # fmt: skip
        self._log.add(row)
