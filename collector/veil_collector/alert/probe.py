"""Send a test notification through a rule's destinations now, outside the outbox (``veil alerts test``)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass

import httpx

from veil_collector.alert.lifecycle import build_notification
from veil_collector.alert.outbox import item_for
from veil_collector.alert.relay import USER_AGENT, classify, send
from veil_collector.alert.rules import Rule


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """How one destination answered the test notification."""

    destination: str
    destination_type: str
    status: int
    outcome: str
    error: str
    latency_ms: float


def send_test(rule: Rule, *, timeout: float = 15.0) -> list[ProbeResult]:
    """Send one firing notification labelled ``test="true"`` to each destination of ``rule``, once.

    The notification id is fresh for every call (receivers must not drop it as a repeat); nothing is retried
    and nothing is written to the outbox or to ClickHouse.
    """
    now = time.time()
    note = build_notification(
        rule,
        group_labels={"test": "true"},
        status="firing",
        value=0.0,
        starts_at=now,
        sequence=1,
        extra_annotations={"description": f"Test notification from Veil for rule {rule.id!r}"},
    )
    note = dataclasses.replace(note, id=f"msg_test_{uuid.uuid4().hex}")
    results = []
    with httpx.Client(timeout=timeout, follow_redirects=False, headers={"user-agent": USER_AGENT}) as client:
        for destination in rule.destinations:
            result = send(client, item_for(note, destination), time.time())
            results.append(
                ProbeResult(
                    destination=destination.name,
                    destination_type=destination.type,
                    status=result.status,
                    outcome=classify(result.status),
                    error=result.error,
                    latency_ms=result.latency_ms,
                )
            )
    return results
