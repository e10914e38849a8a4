"""Delivery through real HTTP receivers on 127.0.0.1 (stand-ins for webhook targets, Slack and PagerDuty).

Each receiver's behaviour is scripted per request: fail the first N, answer slower than the client timeout,
answer 410, 400 or 429 with Retry-After. The engine runs for real (threads, outbox, relay); the retry
schedule is shortened so the tests stay fast.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from alert_receivers import SECRET, Receiver, wait_until
from standardwebhooks.webhooks import Webhook

from veil_collector.alert import AlertEngine
from veil_collector.records import Evaluation

NOW = datetime.now(tz=timezone.utc)


def toxic(model: str = "gpt-4o", score: float = 0.95) -> Evaluation:
    return Evaluation(
        project_id="default", timestamp=NOW, evaluated_at=NOW, trace_id="a" * 32, span_id="b" * 16,
        service_name="chat", environment="prod", request_model=model, target="output", evaluator="toxicity",
        label="toxicity", score=score, model_name="detoxify", model_version="0.5",
    )  # fmt: skip


def rules_for(*destinations: str, resolve_after: str = "5m") -> str:
    return (
        "rules:\n  - id: toxic\n    name: Toxic output\n    severity: error\n"
        "    event: {type: toxicity, threshold: 0.8, group_by: [service, model]}\n"
        f"    resolve_after: {resolve_after}\n    destinations:\n"
        + "".join(f"      - {d}\n" for d in destinations)
    )


@pytest.fixture
def run_engine(settings_factory: Callable[..., Any], store: Any) -> Iterator[Callable[..., AlertEngine]]:
    engines: list[AlertEngine] = []

    def start(rules: str, **kwargs: Any) -> AlertEngine:
        options = {"retry_schedule": (0.05,), "max_attempts": 10, "http_timeout": 0.5, "tick": 0.05, **kwargs}
        engine = AlertEngine(settings_factory(rules), store, **options)
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop(timeout=5)


def attempts(store: Any) -> list[tuple[int, str, int]]:
    rows = store.query("SELECT Attempt, Outcome, HttpStatus FROM deliveries ORDER BY Timestamp, Attempt")
    return [tuple(row) for row in rows.result_rows]


def verify_standard_webhooks(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check, written from the spec (independent of the signer under test)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if abs(time.time() - int(headers["webhook-timestamp"])) > 300:
        return False
    return any(
        version == "v1" and hmac.compare_digest(sig, expected)
        for version, _, sig in (entry.partition(",") for entry in headers["webhook-signature"].split(" "))
    )


def test_signed_grafana_compatible_webhook(
    receiver_factory: Callable[..., Receiver], run_engine: Callable[..., AlertEngine], store: Any
) -> None:
    receiver = receiver_factory()
    engine = run_engine(rules_for(f'{{name: ops, type: webhook, url: "{receiver.url}", secret: "{SECRET}"}}'))
    engine.on_evaluations([toxic()])
    receiver.wait_for(lambda r: len(r.processed) == 1)

    [request] = receiver.requests
    assert request.headers["webhook-id"].startswith("msg_")
    assert verify_standard_webhooks(SECRET, request.headers, request.body)
    Webhook(SECRET).verify(request.body, request.headers)  # the reference library agrees
    tampered = request.body.replace(b"firing", b"resolved")
    assert not verify_standard_webhooks(SECRET, request.headers, tampered)

    body = request.json
    assert (body["status"], body["version"], body["receiver"], body["state"]) == (
        "firing",
        "1",
        "ops",
        "alerting",
    )
    [alert] = body["alerts"]
    assert alert["labels"]["alertname"] == "Toxic output" and alert["labels"]["model"] == "gpt-4o"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z" and len(alert["fingerprint"]) == 16
    assert alert["values"]["A"] == pytest.approx(0.95)
    wait_until(lambda: attempts(store) == [(1, "delivered", 200)])
    assert engine.outbox_counts() == {"delivered": 1}


def test_retries_until_the_receiver_recovers_with_one_webhook_id(
    receiver_factory: Callable[..., Receiver], run_engine: Callable[..., AlertEngine], store: Any
) -> None:
    receiver = receiver_factory(lambda i, h, b: (503 if i < 3 else 200, {}, 0.0))
    engine = run_engine(rules_for(f'{{name: ops, type: webhook, url: "{receiver.url}", secret: "{SECRET}"}}'))
    engine.on_evaluations([toxic()])
    receiver.wait_for(lambda r: len(r.processed) == 1)
    assert len(receiver.requests) == 4
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes on every retry
    wait_until(lambda: len(attempts(store)) == 4)
    assert attempts(store) == [(1, "retry", 503), (2, "retry", 503), (3, "retry", 503), (4, "delivered", 200)]


def test_a_receiver_slower_than_the_timeout_is_retried(
    receiver_factory: Callable[..., Receiver], run_engine: Callable[..., AlertEngine], store: Any
) -> None:
    receiver = receiver_factory(lambda i, h, b: (200, {}, 2.0 if i == 0 else 0.0))
    engine = run_engine(rules_for(f'{{name: ops, type: webhook, url: "{receiver.url}"}}'), http_timeout=0.3)
    engine.on_evaluations([toxic()])
    receiver.wait_for(lambda r: len(r.processed) == 1)
    wait_until(lambda: len(attempts(store)) == 2)
    assert attempts(store) == [(1, "retry", 0), (2, "delivered", 200)]
    error = store.query("SELECT Error FROM deliveries WHERE Attempt = 1").result_rows[0][0]
    assert "Timeout" in error


def test_410_disables_the_destination(
    receiver_factory: Callable[..., Receiver], run_engine: Callable[..., AlertEngine], store: Any
) -> None:
    gone = receiver_factory(lambda i, h, b: (410, {}, 0.0))
    engine = run_engine(rules_for(f'{{name: gone, type: webhook, url: "{gone.url}"}}'))
    engine.on_evaluations([toxic()])
    wait_until(lambda: engine.outbox_counts() == {"disabled": 1})
    engine.on_evaluations([toxic(model="other")])  # a new alert to the same, now disabled, endpoint
    wait_until(lambda: engine.outbox_counts() == {"disabled": 2})
    assert len(gone.requests) == 1
    wait_until(lambda: len(attempts(store)) == 2)
    assert [(a, o) for a, o, _ in attempts(store)] == [(1, "disabled"), (0, "disabled")]


def test_other_4xx_fail_without_retry(
    receiver_factory: Callable[..., Receiver], run_engine: Callable[..., AlertEngine], store: Any
) -> None:
    bad = receiver_factory(lambda i, h, b: (400, {}, 0.0))
    engine = run_engine(rules_for(f'{{name: bad, type: webhook, url: "{bad.url}"}}'))
    engine.on_evaluations([toxic()])
    wait_until(lambda: engine.outbox_counts() == {"failed": 1})
    wait_until(lambda: len(attempts(store)) == 1)
    assert attempts(store) == [(1, "failed", 400)]
    assert len(bad.requests) == 1


def test_retry_after_is_honoured(
    receiver_factory: Callable[..., Receiver], run_engine: Callable[..., AlertEngine]
) -> None:
    arrivals: list[float] = []

    def throttled(index: int, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], float]:
        arrivals.append(time.monotonic())
        return (429, {"Retry-After": "1"}, 0.0) if index == 0 else (200, {}, 0.0)

    receiver = receiver_factory(throttled)
    engine = run_engine(rules_for(f'{{name: ops, type: webhook, url: "{receiver.url}"}}'))
    engine.on_evaluations([toxic()])
    receiver.wait_for(lambda r: len(r.processed) == 1)
    # The schedule alone would retry after 0.05 s; Retry-After asked for 1 s.
    assert arrivals[1] - arrivals[0] >= 0.9


def test_dead_letter_after_max_attempts(
    receiver_factory: Callable[..., Receiver], run_engine: Callable[..., AlertEngine], store: Any
) -> None:
    down = receiver_factory(lambda i, h, b: (500, {}, 0.0))
    engine = run_engine(rules_for(f'{{name: down, type: webhook, url: "{down.url}"}}'), max_attempts=3)
    engine.on_evaluations([toxic()])
    wait_until(lambda: engine.outbox_counts() == {"dead": 1})
    wait_until(lambda: len(attempts(store)) == 3)
    assert attempts(store) == [(1, "retry", 500), (2, "retry", 500), (3, "dead", 500)]
    time.sleep(0.2)
    assert len(down.requests) == 3


def test_slack_and_pagerduty_trigger_then_resolve(
    receiver_factory: Callable[..., Receiver], run_engine: Callable[..., AlertEngine]
) -> None:
    slack = receiver_factory()
    pagerduty = receiver_factory(lambda i, h, b: (202, {}, 0.0))
    engine = run_engine(
        rules_for(
            f'{{name: chat, type: slack, url: "{slack.url}"}}',
            f'{{name: oncall, type: pagerduty, routing_key: "R0UTING", url: "{pagerduty.url}"}}',
            resolve_after="300ms",
        )
    )
    engine.on_evaluations([toxic()])
    pagerduty.wait_for(lambda r: len(r.processed) == 2)  # trigger, then resolve after 300 ms of quiet
    slack.wait_for(lambda r: len(r.processed) == 2)

    trigger, resolve = (r.json for r in pagerduty.requests)
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == "R0UTING"
    assert trigger["payload"]["severity"] == "error" and trigger["payload"]["summary"].startswith(
        "Toxic output"
    )
    assert trigger["payload"]["component"] == "gpt-4o" and trigger["payload"]["group"] == "chat"
    assert resolve == {"routing_key": "R0UTING", "event_action": "resolve", "dedup_key": trigger["dedup_key"]}
    assert "webhook-signature" not in pagerduty.requests[0].headers

    firing, resolved = (r.json for r in slack.requests)
    assert firing["text"].startswith("[FIRING] Toxic output")
    assert resolved["text"].startswith("[RESOLVED] Toxic output")
    assert firing["blocks"][0]["type"] == "header"
    assert any("model" in json.dumps(block) for block in firing["blocks"])


def test_disabled_destination_enabled_and_replayed_from_the_cli(
    receiver_factory: Callable[..., Receiver], run_engine: Callable[..., AlertEngine]
) -> None:
    from typer.testing import CliRunner

    from veil_collector.alert.cli import app as alerts_cli
    from veil_collector.alert.outbox import destination_key

    answers = {"status": 410}
    receiver = receiver_factory(lambda i, h, b: (answers["status"], {}, 0.0))
    engine = run_engine(rules_for(f'{{name: flaky, type: webhook, url: "{receiver.url}"}}'))
    engine.on_evaluations([toxic()])
    wait_until(lambda: engine.outbox_counts() == {"disabled": 1})
    data_dir = ["--data-dir", str(engine._data_dir)]
    runner = CliRunner()

    replayed = runner.invoke(alerts_cli, ["replay", *data_dir])
    assert replayed.exit_code == 0 and "1 notification" in replayed.output
    wait_until(lambda: engine.outbox_counts() == {"disabled": 1})  # still disabled: skipped, not sent
    assert len(receiver.requests) == 1

    key = destination_key("webhook", receiver.url)
    assert key in runner.invoke(alerts_cli, ["disabled", *data_dir]).output
    assert runner.invoke(alerts_cli, ["enable", "nope", *data_dir]).exit_code == 1
    assert runner.invoke(alerts_cli, ["enable", key, *data_dir]).exit_code == 0

    answers["status"] = 200
    assert runner.invoke(alerts_cli, ["replay", *data_dir]).exit_code == 0
    receiver.wait_for(lambda r: len(r.processed) == 1)
    wait_until(lambda: engine.outbox_counts() == {"delivered": 1})
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
