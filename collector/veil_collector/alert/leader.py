"""Which collector evaluates the window rules: one at a time, chosen from heartbeats in ClickHouse.

A window rule queries ClickHouse over every collector's data, so each replica evaluating it would send its
own notification. ClickHouse has no compare-and-set to hold a lease with, so the choice is a deterministic
function of shared rows: every engine writes a heartbeat (its instance id, ClickHouse's clock) into
``alert_heartbeats`` every ``interval`` seconds, and the leader is the live instance (its newest heartbeat
within ``liveness`` and not a stop) with the smallest id. Every replica reads the same rows and reaches the
same answer. Instance ids begin with the start time, so the oldest live collector leads and a replica added
by the autoscaler never takes over from a running leader.

Failure modes, and what they cost:

* While membership changes (a collector starts, or a heartbeat has not reached the server another replica
  reads yet) two engines may each find themselves leader for up to one ``interval``. Both evaluate the
  window rules; an alert that changes state then is notified twice, at most: receivers deduplicate by
  fingerprint (PagerDuty's ``dedup_key``, Alertmanager-style grouping).
* A leader that dies (killed, its node lost) is replaced once its last heartbeat is older than
  ``liveness`` (three intervals); window rules are not evaluated in between. A leader that stops cleanly
  writes a stop, and the next one takes over at its next heartbeat.
* An evaluator stuck longer than ``liveness`` (a window query that hangs) stops heart-beating and is
  replaced; when it returns it sees the other leader at its next heartbeat and follows again.
* A collector that cannot reach ClickHouse counts itself a follower: its window queries would fail anyway.
* Alert state lives in each collector's SQLite database, and a follower drops what it held of window
  rules. A new leader therefore starts afresh: a window alert still breaching fires again (a duplicate
  notification), and one whose condition ended before the new leader's first evaluation is not resolved
  by it.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from prometheus_client import Counter, Gauge

from veil_collector.alert.rulestore import SYNC_INSERT
from veil_collector.store import Store

logger = logging.getLogger(__name__)

HEARTBEAT_ERRORS = Counter(
    "veil_alert_heartbeat_errors_total", "Failed heartbeats or leader look-ups of the alert engine"
)
LEADER = Gauge("veil_alert_window_leader", "1 while this collector evaluates the window rules")

_HEARTBEAT = (
    "INSERT INTO alert_heartbeats (InstanceId, Timestamp, Stopped) "
    "SELECT {instance:String}, now64(3), {stopped:UInt8}"
)
# The newest row of each instance decides whether it is stopped; older rows than the liveness window do
# not count at all.
_LEADER = (
    "SELECT InstanceId FROM alert_heartbeats "
    "WHERE Timestamp >= now64(3) - toIntervalMillisecond({liveness_ms:UInt32}) "
    "GROUP BY InstanceId HAVING argMax(Stopped, Timestamp) = 0 "
    "ORDER BY InstanceId LIMIT 1"
)


def new_instance_id() -> str:
    """``<start time in ms>-<host>-<pid>``: unique per process, and older processes sort first."""
    return f"{time.time_ns() // 1_000_000:013d}-{socket.gethostname()}-{os.getpid()}"


class Election:
    """Heart-beats for one engine and tells it whether it leads. Driven by the evaluator thread only.

    Args:
        store: the ClickHouse store every collector of the deployment uses.
        instance_id: this engine's id, unique among the collectors (:func:`new_instance_id`).
        interval: seconds between heartbeats; the answer is recomputed at each.
        liveness: seconds after its last heartbeat that an instance counts as gone (3 intervals when
            ``None``).
    """

    def __init__(
        self, store: Store, instance_id: str, *, interval: float = 5.0, liveness: float | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive; got {interval}")
        self.instance_id = instance_id
        self._store = store
        self._interval = interval
        self._liveness_ms = round((3 * interval if liveness is None else liveness) * 1000)
        self._next = 0.0  # monotonic time of the next heartbeat
        self._leading = False
        self._failing = False

    def poll(self) -> bool:
        """Whether this engine leads now; heart-beats and looks again when the interval has passed."""
        if time.monotonic() < self._next:
            return self._leading
        self._next = time.monotonic() + self._interval
        try:
            self._store.command(
                _HEARTBEAT, {"instance": self.instance_id, "stopped": 0}, settings=SYNC_INSERT
            )
            rows = self._store.query(_LEADER, {"liveness_ms": self._liveness_ms}).result_rows
        except Exception:  # ClickHouse unreachable: follow (window queries would fail too); log once
            HEARTBEAT_ERRORS.inc()
            if not self._failing:
                logger.warning("alert heartbeat failed; not evaluating window rules", exc_info=True)
            self._failing = True
            leading = False
        else:
            self._failing = False
            leading = bool(rows) and rows[0][0] == self.instance_id
        if leading != self._leading:
            logger.info(
                "alert engine %s %s the window rules",
                self.instance_id,
                "now evaluates" if leading else "no longer evaluates",
            )
        self._leading = leading
        LEADER.set(int(leading))
        return leading

    def resign(self) -> None:
        """Write a stop, so that the next instance leads at its next heartbeat rather than after
        ``liveness``. Never raises: if ClickHouse is unreachable the heartbeats simply age out."""
        self._leading = False
        self._next = 0.0  # a restarted engine heart-beats at its first pass
        LEADER.set(0)
        try:
            self._store.command(
                _HEARTBEAT, {"instance": self.instance_id, "stopped": 1}, settings=SYNC_INSERT
            )
        except Exception:  # stopping must not fail on ClickHouse; the liveness window covers this case
            HEARTBEAT_ERRORS.inc()
            logger.warning("could not write the alert engine's stop heartbeat", exc_info=True)
