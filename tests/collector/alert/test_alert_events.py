"""Event rules on Evaluation / PiiFinding / GuardDecision records: fire, deduplicate, repeat, resolve.

The engine is not started: the test calls ``evaluate(now)`` with its own clock and reads the outbox, so
nothing is sent; delivery has its own tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from veil_collector.alert import AlertEngine
from veil_collector.records import Evaluation, GuardDecision, PiiFinding

T0 = 1_800_000_000.0
NOW = datetime.fromtimestamp(T0, tz=timezone.utc)

RULES = """
rules:
  - id: toxic
    name: Toxic output
    severity: critical
    labels: {team: ml}
    annotations: {runbook_url: "https://runbooks/toxic", description: "score {value} on {service}"}
    event: {type: toxicity, threshold: 0.8}
    repeat_interval: 1h
    resolve_after: 5m
    destinations: [{name: ops, type: webhook, url: "http://127.0.0.1:9/hook"}]
  - id: leak
    name: PII leak
    event: {type: pii_leak, entity_types: [EMAIL_ADDRESS, PHONE_NUMBER], group_by: [service, entity_type]}
    destinations:
      - {name: ops, type: webhook, url: "http://127.0.0.1:9/hook"}
      - {name: pd, type: pagerduty, routing_key: k, url: "http://127.0.0.1:9/pd"}
  - id: blocked
    name: Guard block
    event: {type: guard_block, checks: [jailbreak]}
    destinations: [{name: chat, type: slack, url: "http://127.0.0.1:9/slack"}]
"""


def evaluation(
    score: float, *, model: str = "gpt-4o", target: str = "output", project: str = "default"
) -> Evaluation:
    return Evaluation(
        project_id=project, timestamp=NOW, evaluated_at=NOW, trace_id="t" * 32, span_id="s" * 16,
        service_name="chat", environment="prod", request_model=model, target=target, evaluator="toxicity",
        label="toxicity", score=score, model_name="detoxify-original", model_version="0.5",
    )  # fmt: skip


def finding(entity: str, *, missed: bool = True) -> PiiFinding:
    return PiiFinding(
        project_id="default", timestamp=NOW, trace_id="t" * 32, span_id="s" * 16, service_name="chat",
        entity_type=entity, count=2, detector="ner", location="output", source="server",
        sdk_scrubbed=not missed, sdk_missed=missed,
    )  # fmt: skip


def decision(verdict: str, check: str = "jailbreak") -> GuardDecision:
    return GuardDecision(
        project_id="default", timestamp=NOW, trace_id="t" * 32, span_id="s" * 16, service_name="chat",
        environment="prod", request_model="gpt-4o", target="input", check=check, decision=verdict,
        score=0.97, source="collector",
    )  # fmt: skip


@pytest.fixture
def engine(settings_factory: Callable[..., Any], store: Any) -> AlertEngine:
    return AlertEngine(settings_factory(RULES), store)


def test_toxic_output_fires_once_per_label_set_while_firing(engine: AlertEngine) -> None:
    engine.on_evaluations(
        [evaluation(0.95), evaluation(0.85), evaluation(0.5), evaluation(0.99, target="input")]
    )
    [note] = engine.evaluate(T0)
    assert (note.rule_id, note.status, note.severity, note.value) == ("toxic", "firing", "critical", 0.95)
    assert note.labels == {
        "alertname": "Toxic output", "severity": "critical", "project": "default", "rule_id": "toxic",
        "team": "ml", "service": "chat", "model": "gpt-4o",
    }  # fmt: skip
    assert note.annotations["runbook_url"] == "https://runbooks/toxic"
    assert note.annotations["description"] == "score 0.95 on chat"
    assert note.annotations["trace_id"] == "t" * 32
    assert note.values == {"records": 2}

    engine.on_evaluations([evaluation(0.97)])
    assert engine.evaluate(T0 + 60) == []  # same label set, still firing: deduplicated
    engine.on_evaluations([evaluation(0.9, model="llama-3")])
    [other] = engine.evaluate(T0 + 61)
    assert other.labels["model"] == "llama-3" and other.fingerprint != note.fingerprint
    assert engine.outbox_counts() == {"pending": 2}


def test_firing_alert_repeats_after_the_interval_and_resolves_after_quiet(engine: AlertEngine) -> None:
    engine.on_evaluations([evaluation(0.95)])
    [first] = engine.evaluate(T0)
    engine.on_evaluations([evaluation(0.95)])
    assert engine.evaluate(T0 + 200) == []
    engine.on_evaluations([evaluation(0.95)])
    assert engine.evaluate(T0 + 3599) == []
    [repeat] = engine.evaluate(T0 + 3600)  # repeat_interval 1h after the first send
    assert (repeat.status, repeat.fingerprint, repeat.starts_at) == ("firing", first.fingerprint, T0)
    assert repeat.id != first.id
    assert engine.evaluate(T0 + 3599 + 299) == []  # last event at T0+3599; quiet for < resolve_after
    [resolved] = engine.evaluate(T0 + 3599 + 300)
    assert (resolved.status, resolved.fingerprint, resolved.ends_at) == (
        "resolved",
        first.fingerprint,
        T0 + 3899,
    )

    history = engine.history("default")
    assert [(row["Status"], row["NotificationId"]) for row in history] == [
        ("resolved", resolved.id),
        ("firing", first.id),  # the repeat is a re-send, not a state change
    ]
    assert history[1]["Labels"]["team"] == "ml" and history[0]["EndsAt"] is not None
    assert engine.history("default", status="firing")[0]["NotificationId"] == first.id
    assert engine.history("other") == []

    engine.on_evaluations([evaluation(0.95)])
    [again] = engine.evaluate(T0 + 4000)  # a new firing after a resolution: a new alert instance
    assert again.status == "firing" and again.id not in {first.id, repeat.id}


def test_pii_the_sdk_missed_is_a_leak(engine: AlertEngine) -> None:
    engine.on_pii_findings(
        [finding("EMAIL_ADDRESS", missed=False), finding("PERSON"), finding("EMAIL_ADDRESS")]
    )
    [note] = engine.evaluate(T0)
    assert (note.rule_id, note.value) == ("leak", 2.0)
    assert note.labels["entity_type"] == "EMAIL_ADDRESS" and note.labels["service"] == "chat"
    # Two destinations: two outbox rows for one notification.
    assert engine.outbox_counts() == {"pending": 2}


def test_guard_blocks_fire_and_passes_do_not(engine: AlertEngine) -> None:
    engine.on_guard_decisions([decision("pass"), decision("block", check="length")])
    assert engine.evaluate(T0) == []
    engine.on_guard_decisions([decision("block")])
    [note] = engine.evaluate(T0 + 1)
    assert (note.rule_id, note.labels["service"], note.value) == ("blocked", "chat", 0.97)


def test_records_of_other_projects_do_not_match(engine: AlertEngine) -> None:
    engine.on_evaluations([evaluation(0.99, project="other")])
    assert engine.evaluate(T0) == []


def test_same_transition_after_restart_is_not_sent_twice(
    settings_factory: Callable[..., Any], store: Any
) -> None:
    settings = settings_factory(RULES)
    first = AlertEngine(settings, store)
    first.on_evaluations([evaluation(0.95)])
    [note] = first.evaluate(T0)
    second = AlertEngine(settings, store)  # same data_dir: the alert is still firing there
    second.on_evaluations([evaluation(0.95)])
    assert second.evaluate(T0 + 1) == []
    assert second.outbox_counts() == {"pending": 1}
    assert [row["NotificationId"] for row in second.history("default")] == [note.id]


def test_deleting_a_firing_rule_resolves_its_alerts(engine: AlertEngine) -> None:
    from veil_collector.alert.rules import Rule

    engine.rules.create(
        Rule.model_validate(
            {
                "id": "api-toxic",
                "name": "Toxic (API)",
                "event": {"type": "toxicity", "threshold": 0.5},
                "destinations": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook"}],
            }
        )
    )
    engine.on_evaluations([evaluation(0.6)])
    [fired] = engine.evaluate(T0)
    engine.rules.delete("default", "api-toxic")
    [resolved] = engine.evaluate(T0 + 1)
    assert (resolved.rule_id, resolved.status, resolved.fingerprint) == (
        "api-toxic",
        "resolved",
        fired.fingerprint,
    )


def test_sink_methods_drop_and_count_when_the_queue_is_full(
    settings_factory: Callable[..., Any], store: Any
) -> None:
    from veil_collector.alert.engine import RECORDS_DROPPED

    engine = AlertEngine(settings_factory(RULES), store, queue_size=1)
    before = RECORDS_DROPPED._value.get()
    engine.on_evaluations([evaluation(0.95)])
    engine.on_evaluations([evaluation(0.95), evaluation(0.96)])  # no room: dropped, counted, no exception
    assert RECORDS_DROPPED._value.get() - before == 2
    assert len(engine.evaluate(T0)) == 1
