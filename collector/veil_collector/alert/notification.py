"""One notification (a firing, a repeat or a resolution of one alert) and the bodies each destination gets.

Bodies are rendered once, when the notification enters the outbox, so every retry sends the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from veil_collector.alert.rules import Destination, PagerDutyDestination, SlackDestination

Status = Literal["firing", "resolved"]

# Alertmanager's "not ended yet" timestamp.
_ZERO_TIME = "0001-01-01T00:00:00Z"
_PAGERDUTY_SUMMARY_MAX = 1024


def fingerprint(project_id: str, rule_id: str, group_labels: dict[str, str]) -> str:
    """A stable 16-hex-digit id of one rule's alert for one label set (the PagerDuty ``dedup_key``)."""
    canonical = json.dumps([project_id, rule_id, sorted(group_labels.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def notification_id(fingerprint_: str, status: Status, starts_at: float, sequence: int) -> str:
    """The deterministic ``webhook-id``: the same alert transition always gets the same id.

    ``sequence`` counts the sends of one firing (1 for the first, 2 for the first repeat, ...), so a repeat
    is a new message while a re-evaluation after a crash is not.
    """
    key = f"{fingerprint_}|{status}|{round(starts_at * 1000)}|{sequence}"
    return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def iso(ts: float) -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    return (
        datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


@dataclass(frozen=True, slots=True)
class Notification:
    """What one alert transition says; ``labels`` include ``alertname``, ``severity`` and ``project``."""

    id: str
    project_id: str
    rule_id: str
    rule_name: str
    fingerprint: str
    status: Status
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    starts_at: float
    ends_at: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    sequence: int = 1  # 1 for the first send of a firing, 2+ for repeats, 0 for a resolution

    @property
    def summary(self) -> str:
        return self.annotations.get("summary") or self.rule_name


def render(notification: Notification, destination: Destination) -> dict[str, Any]:
    """The JSON body for one destination type."""
    if isinstance(destination, SlackDestination):
        return slack_body(notification)
    if isinstance(destination, PagerDutyDestination):
        return pagerduty_body(notification, destination.routing_key.get_secret_value())
    return webhook_body(notification, destination.name)


def webhook_body(n: Notification, receiver: str) -> dict[str, Any]:
    """A Grafana/Alertmanager webhook body holding this one alert."""
    alert = {
        "status": n.status,
        "labels": n.labels,
        "annotations": n.annotations,
        "startsAt": iso(n.starts_at),
        "endsAt": iso(n.ends_at) if n.ends_at is not None else _ZERO_TIME,
        "generatorURL": "",
        "fingerprint": n.fingerprint,
        "silenceURL": "",
        "dashboardURL": "",
        "panelURL": "",
        "values": {"A": n.value, **n.values},
    }
    group_labels = {"alertname": n.labels["alertname"]}
    return {
        "receiver": receiver,
        "status": n.status,
        "orgId": 1,
        "alerts": [alert],
        "groupLabels": group_labels,
        "commonLabels": n.labels,
        "commonAnnotations": n.annotations,
        "externalURL": "",
        "version": "1",
        "groupKey": f"{{}}:{{alertname={n.labels['alertname']!r}}}",
        "truncatedAlerts": 0,
        "title": _title(n),
        "state": "alerting" if n.status == "firing" else "ok",
        "message": n.summary,
    }


def _title(n: Notification) -> str:
    return f"[{n.status.upper()}] {n.rule_name}"


def slack_body(n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` (the notification fallback) plus Block Kit ``blocks``."""
    icon = ":rotating_light:" if n.status == "firing" else ":white_check_mark:"
    label_lines = "\n".join(f"*{key}*: {value}" for key, value in sorted(n.labels.items()))
    details = [f"*Value*: {n.value:g}", f"*Started*: {iso(n.starts_at)}"]
    if n.ends_at is not None:
        details.append(f"*Resolved*: {iso(n.ends_at)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{_title(n)}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {n.summary}"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": d} for d in details]},
        {"type": "section", "text": {"type": "mrkdwn", "text": label_lines or "(no labels)"}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"Veil · {n.severity} · fingerprint `{n.fingerprint}`"}],
        },
    ]
    return {"text": f"{_title(n)}: {n.summary}", "blocks": blocks}


_PD_SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


def pagerduty_body(n: Notification, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events v2 ``trigger`` (firing) or ``resolve`` (resolved) keyed by the fingerprint."""
    if n.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": n.fingerprint}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": n.fingerprint,
        "payload": {
            "summary": n.summary[:_PAGERDUTY_SUMMARY_MAX],
            "source": f"veil/{n.project_id}/{n.labels.get('service', n.rule_id)}",
            "severity": _PD_SEVERITY.get(n.severity, "warning"),
            "timestamp": iso(n.starts_at),
            "component": n.labels.get("model", ""),
            "group": n.labels.get("service", ""),
            "class": n.rule_id,
            "custom_details": {
                "value": n.value,
                **n.values,
                "labels": n.labels,
                "annotations": n.annotations,
            },
        },
        "client": "Veil",
    }
