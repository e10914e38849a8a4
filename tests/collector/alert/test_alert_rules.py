"""Rule model, YAML loading and the per-project rule store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alert_receivers import SECRET

from veil_collector.alert.rules import Rule, RulesFileError, RuleSpec, load_rules_file, parse_duration
from veil_collector.alert.rulestore import RuleConflict, RuleNotFound, RuleStore
from veil_collector.store import Store

RULES_YAML = f"""
rules:
  - id: toxic-output
    name: Toxic output
    severity: critical
    labels: {{team: ml}}
    event: {{type: toxicity, threshold: 0.8}}
    repeat_interval: 4h
    destinations:
      - {{name: ops, type: webhook, url: "http://127.0.0.1:9/hook", secret: "{SECRET}"}}
  - id: errors
    project: payments
    name: Error rate
    window: {{type: error_rate, window: 5m, threshold: 0.05, min_samples: 20, group_by: [service, model]}}
    for: 2m
    every: 15s
    destinations:
      - {{name: oncall, type: pagerduty, routing_key: "R0UT1NGKEY"}}
      - {{name: chat, type: slack, url: "https://hooks.slack.com/services/T/B/X"}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(30, 30.0), ("30s", 30.0), ("5m", 300.0), ("4h", 14400.0), ("1d", 86400.0), ("250ms", 0.25)],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["5 minutes", "-3s", True, None, "h"])
def test_bad_durations_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(raw)


def test_rules_file_loads_every_field(tmp_path: Path) -> None:
    toxic, errors = load_rules_file(_write(tmp_path, RULES_YAML))
    assert (toxic.project, toxic.id, toxic.source, toxic.kind) == ("default", "toxic-output", "file", "event")
    assert toxic.event.threshold == 0.8 and toxic.event.group_by == ["service", "model"]
    assert toxic.repeat_interval == 4 * 3600
    assert (errors.project, errors.kind, errors.for_, errors.every) == ("payments", "window", 120.0, 15.0)
    assert errors.window.window == 300.0 and errors.window.min_samples == 20
    assert [d.type for d in errors.destinations] == ["pagerduty", "slack"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "rules: [{id: a, name: A, destinations: [{name: x, type: slack, url: 'https://h/x'}]}]",
            "exactly one",
        ),
        (
            "rules: [{id: a, name: A, event: {type: toxicity, threshold: 0.5, group_by: [user]},"
            " destinations: [{name: x, type: slack, url: 'https://h/x'}]}]",
            "cannot group by user",
        ),
        (
            "rules: [{id: a, name: A, event: {type: toxicity, threshold: 1.5},"
            " destinations: [{name: x, type: slack, url: 'https://h/x'}]}]",
            "threshold",
        ),
        (
            "rules: [{id: a, name: A, event: {type: pii_leak}, destinations: "
            "[{name: x, type: webhook, url: 'https://h/x', secret: 'not-a-secret'}]}]",
            "whsec_",
        ),
        ("rules: [{id: a, name: A, event: {type: pii_leak}, destinations: []}]", "destinations"),
        (
            "rules: [{id: a, name: A, event: {type: guard_block}, for: 1m,"
            " destinations: [{name: x, type: slack, url: 'https://h/x'}]}]",
            "'for' applies to window rules",
        ),
        (
            "rules: [{id: a, name: A, window: {type: token_spend, threshold: 10, group_by: [service]},"
            " destinations: [{name: x, type: slack, url: 'https://h/x'}]}]",
            "user or session",
        ),
        ("rules: [{id: 'bad id!', name: A, event: {type: pii_leak}, destinations: []}]", "id"),
        ("rules: [{id: a, name: A, event: {type: nope}, destinations: []}]", "event"),
        ("[1, 2]", "mapping"),
        ("rules: [{{", "not valid YAML"),
    ],
)
def test_invalid_rules_files_say_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(RulesFileError, match=message):
        load_rules_file(_write(tmp_path, body))


def test_duplicate_ids_in_one_project_are_refused(tmp_path: Path) -> None:
    rule = "{id: a, name: A, event: {type: pii_leak}, destinations: [{name: x, type: slack, url: 'https://h/x'}]}"
    with pytest.raises(RulesFileError, match="appears twice"):
        load_rules_file(_write(tmp_path, f"rules: [{rule}, {rule}]"))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulesFileError, match="cannot read"):
        load_rules_file(tmp_path / "absent.yaml")


def test_secrets_are_masked_in_dumps_and_kept_for_persistence(tmp_path: Path) -> None:
    toxic, errors = load_rules_file(_write(tmp_path, RULES_YAML))
    public = json.dumps([toxic.model_dump(mode="json"), errors.model_dump(mode="json")])
    assert SECRET not in public and "R0UT1NGKEY" not in public and "hooks.slack.com" not in public
    persisted = json.dumps([toxic.with_secrets(), errors.with_secrets()])
    assert SECRET in persisted and "R0UT1NGKEY" in persisted and "hooks.slack.com/services/T/B/X" in persisted
    assert Rule.model_validate(errors.with_secrets()) == errors


def test_rule_store_crud_per_project(store: Store) -> None:
    rules = RuleStore(store)
    spec = RuleSpec.model_validate(
        {
            "id": "leak",
            "name": "PII leak",
            "event": {"type": "pii_leak"},
            "destinations": [{"name": "x", "type": "slack", "url": "https://h/x"}],
        }
    )
    rule_a = Rule(**dict(spec), project="a")
    rules.create(rule_a)
    rules.create(Rule(**dict(spec), project="b"))
    with pytest.raises(RuleConflict, match="already exists"):
        rules.create(rule_a)
    assert [r.project for r in rules.list_rules("a")] == ["a"]
    assert rules.get("a", "leak") == rule_a

    changed = rule_a.model_copy(update={"name": "Leak!"})
    rules.replace(changed)
    assert rules.get("a", "leak").name == "Leak!"
    assert rules.get("b", "leak").name == "PII leak"

    rules.delete("a", "leak")
    with pytest.raises(RuleNotFound):
        rules.get("a", "leak")
    with pytest.raises(RuleNotFound):
        rules.delete("a", "leak")
    with pytest.raises(RuleNotFound):
        rules.replace(changed)
    # Shared: a second rule store on the same database (another replica) sees what the first wrote.
    assert [r.project for r in RuleStore(store).list_rules()] == ["b"]


def test_file_rules_are_synced_and_read_only(tmp_path: Path, store: Store) -> None:
    rules = RuleStore(store)
    toxic, errors = load_rules_file(_write(tmp_path, RULES_YAML))
    rules.sync_file_rules([toxic, errors])
    with pytest.raises(RuleConflict, match="rules file"):
        rules.replace(toxic)
    with pytest.raises(RuleConflict, match="rules file"):
        rules.delete("default", "toxic-output")
    rules.sync_file_rules([errors])  # the file no longer has toxic-output
    assert [r.id for r in rules.list_rules()] == ["errors"]
