"""``/api/alert-rules`` and ``/api/alerts`` through FastAPI's TestClient, and the ``veil alerts`` commands.

The app here mounts only the alert router; the caller's project comes from an ``x-project`` header in place
of the API-key lookup (``get_project`` is overridden), so projects can be told apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from alert_receivers import SECRET, Receiver
from fastapi import FastAPI, Header
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner

from veil_collector.alert import AlertEngine
from veil_collector.alert.cli import app as alerts_cli
from veil_collector.alert.rules import Rule
from veil_collector.alert.rulestore import RuleStore
from veil_collector.api.deps import get_project
from veil_collector.api.routes.alerts import router

FILE_RULES = """
rules:
  - id: from-file
    name: From the file
    event: {type: guard_block}
    destinations: [{name: chat, type: slack, url: "https://hooks.slack.com/services/T/B/X"}]
"""

RULE = {
    "id": "toxic",
    "name": "Toxic output",
    "severity": "critical",
    "event": {"type": "toxicity", "threshold": 0.8},
    "for": "0s",
    "repeat_interval": "1h",
    "destinations": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": SECRET}],
}


@pytest.fixture
def engine(settings_factory: Callable[..., Any], store: Any) -> AlertEngine:
    return AlertEngine(settings_factory(FILE_RULES), store)


@pytest.fixture
def client(engine: AlertEngine) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(router)
    app.state.alert_engine = engine

    def project(x_project: Annotated[str, Header()] = "default") -> str:
        return x_project

    app.dependency_overrides[get_project] = project
    with TestClient(app) as test_client:
        yield test_client


def test_rule_crud(client: TestClient) -> None:
    created = client.post("/api/alert-rules", json=RULE)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["id"], body["project"], body["source"], body["repeat_interval"]) == (
        "toxic",
        "default",
        "api",
        3600,
    )
    assert body["destinations"][0]["secret"] == "**********"  # secrets are write-only
    assert client.post("/api/alert-rules", json=RULE).status_code == 409

    assert [r["id"] for r in client.get("/api/alert-rules").json()] == ["from-file", "toxic"]
    assert client.get("/api/alert-rules/toxic").json()["name"] == "Toxic output"

    changed = client.put("/api/alert-rules/toxic", json={**RULE, "name": "Very toxic"})
    assert changed.status_code == 200 and changed.json()["name"] == "Very toxic"
    mismatch = client.put("/api/alert-rules/toxic", json={**RULE, "id": "other"})
    assert mismatch.status_code == 422 and "differs" in mismatch.json()["detail"]
    assert client.put("/api/alert-rules/absent", json={**RULE, "id": "absent"}).status_code == 404

    assert client.delete("/api/alert-rules/toxic").status_code == 204
    assert client.get("/api/alert-rules/toxic").status_code == 404
    assert client.delete("/api/alert-rules/toxic").status_code == 404


def test_secrets_survive_an_update_round_trip(client: TestClient, engine: AlertEngine) -> None:
    client.post("/api/alert-rules", json=RULE)
    stored = engine.rules.get("default", "toxic")
    assert stored.destinations[0].secret.get_secret_value() == SECRET


def test_rules_are_per_project(client: TestClient) -> None:
    assert client.post("/api/alert-rules", json=RULE, headers={"x-project": "a"}).status_code == 201
    assert client.post("/api/alert-rules", json=RULE, headers={"x-project": "b"}).status_code == 201
    assert client.get("/api/alert-rules", headers={"x-project": "c"}).json() == []
    assert client.delete("/api/alert-rules/toxic", headers={"x-project": "a"}).status_code == 204
    assert client.get("/api/alert-rules/toxic", headers={"x-project": "b"}).status_code == 200


def test_file_rules_are_read_only_through_the_api(client: TestClient) -> None:
    rule = client.get("/api/alert-rules/from-file").json()
    assert rule["source"] == "file"
    assert client.delete("/api/alert-rules/from-file").status_code == 409
    replaced = client.put("/api/alert-rules/from-file", json={**RULE, "id": "from-file"})
    assert replaced.status_code == 409 and "rules file" in replaced.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"window": {"type": "error_rate", "threshold": 0.1}}, "exactly one"),
        ({"event": {"type": "toxicity", "threshold": 2}}, "threshold"),
        ({"destinations": []}, "destinations"),
        ({"repeat_interval": "soon"}, "duration"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_rules_are_422(client: TestClient, change: dict[str, Any], field: str) -> None:
    response = client.post("/api/alert-rules", json={**RULE, **change})
    assert response.status_code == 422
    assert field in str(response.json()["detail"])


def test_alert_history(client: TestClient, engine: AlertEngine) -> None:
    from test_alert_events import T0, evaluation

    client.post("/api/alert-rules", json=RULE)
    engine.on_evaluations([evaluation(0.9)])
    [fired] = engine.evaluate(T0)
    [row] = client.get("/api/alerts").json()
    assert (row["rule_id"], row["status"], row["notification_id"]) == ("toxic", "firing", fired.id)
    assert row["labels"]["model"] == "gpt-4o" and row["ends_at"] is None
    assert client.get("/api/alerts", params={"status": "resolved"}).json() == []
    assert client.get("/api/alerts", headers={"x-project": "b"}).json() == []
    assert client.get("/api/alerts", params={"status": "maybe"}).status_code == 422
    assert client.get("/api/alerts", params={"limit": 0}).status_code == 422


def test_without_an_engine_the_routes_answer_503() -> None:
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_project] = lambda: "default"
    with TestClient(app) as test_client:
        response = test_client.get("/api/alert-rules")
    assert response.status_code == 503 and "not running" in response.json()["detail"]


# --- CLI ---------------------------------------------------------------------------------------------------


def test_cli_sends_a_signed_test_notification(
    receiver_factory: Callable[..., Receiver],
    tmp_path: Path,
    store: Any,
    chdb_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = receiver_factory()
    broken = receiver_factory(lambda i, h, b: (500, {}, 0.0))
    rules = tmp_path / "cli-rules.yaml"
    rules.write_text(
        "rules:\n  - id: toxic\n    name: Toxic\n    event: {type: toxicity, threshold: 0.8}\n"
        f'    destinations: [{{name: ops, type: webhook, url: "{receiver.url}", secret: "{SECRET}"}}]\n'
        "  - id: broken\n    name: Broken\n    event: {type: pii_leak}\n"
        f'    destinations: [{{name: down, type: webhook, url: "{broken.url}"}}]\n'
    )
    # The API's rules are read from the test's database (embedded ClickHouse: one folder per process).
    monkeypatch.setenv("VEIL_DATABASE", store.database)
    RuleStore(store).create(
        Rule.model_validate(
            {
                **RULE,
                "id": "stored",
                "destinations": [{"name": "x", "type": "webhook", "url": receiver.url}],
            }
        )
    )
    runner = CliRunner()
    options = ["--rules-file", str(rules), "--dsn", chdb_dsn]

    result = runner.invoke(alerts_cli, ["test", "toxic", *options])
    assert result.exit_code == 0, result.output
    assert "sent ops (webhook): HTTP 200" in result.output
    [request] = receiver.requests
    Webhook(SECRET).verify(request.body, request.headers)
    assert request.json["alerts"][0]["labels"]["test"] == "true"
    assert request.headers["webhook-id"].startswith("msg_test_")

    failed = runner.invoke(alerts_cli, ["test", "broken", *options, "--timeout", "2"])
    assert failed.exit_code == 1 and "HTTP 500" in failed.output

    missing = runner.invoke(alerts_cli, ["test", "nope", *options])
    assert missing.exit_code == 2 and "no alert rule 'nope'" in missing.output

    listed = runner.invoke(alerts_cli, ["list", *options])
    assert listed.exit_code == 0, listed.output
    assert "toxic" in listed.output and "broken" in listed.output and "stored" in listed.output
    from_api = runner.invoke(alerts_cli, ["test", "stored", *options])
    assert from_api.exit_code == 0 and "sent x (webhook): HTTP 200" in from_api.output


def test_cli_validate(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(FILE_RULES)
    bad.write_text("rules: [{id: a, name: A, event: {type: toxicity}, destinations: []}]")
    runner = CliRunner()
    assert runner.invoke(alerts_cli, ["validate", str(good)]).output.strip().endswith("1 valid rule(s)")
    result = runner.invoke(alerts_cli, ["validate", str(bad)])
    assert result.exit_code == 1 and "threshold" in result.output
