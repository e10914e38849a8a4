"""Event rules: which single records (evaluations, PII findings, guard decisions) breach which rules.

Records of one batch that fall into the same rule and label set collapse into one observation carrying the
highest value, the number of matching records and the latest trace id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from veil_collector.alert.lifecycle import Observation
from veil_collector.alert.rules import GuardBlockEvent, PiiLeakEvent, Rule, ToxicityEvent
from veil_collector.records import Evaluation, GuardDecision, PiiFinding

Record = Evaluation | PiiFinding | GuardDecision


def _labels(record: Record) -> dict[str, str]:
    if isinstance(record, Evaluation):
        return {
            "service": record.service_name,
            "environment": record.environment,
            "model": record.request_model,
            "target": record.target,
        }
    if isinstance(record, PiiFinding):
        return {
            "service": record.service_name,
            "entity_type": record.entity_type,
            "location": record.location,
            "detector": record.detector,
        }
    return {
        "service": record.service_name,
        "environment": record.environment,
        "model": record.request_model,
        "target": record.target,
        "check": record.check,
    }


def breach_value(rule: Rule, record: Record) -> float | None:
    """The value by which ``record`` breaches ``rule`` (score or count), ``None`` when it does not."""
    condition = rule.event
    if record.project_id != rule.project:
        return None
    if isinstance(condition, ToxicityEvent) and isinstance(record, Evaluation):
        if record.evaluator != "toxicity" or record.label != condition.label:
            return None
        if condition.target != "any" and record.target != condition.target:
            return None
        return record.score if record.score >= condition.threshold else None
    if isinstance(condition, PiiLeakEvent) and isinstance(record, PiiFinding):
        if not record.sdk_missed or record.count <= 0:
            return None
        if condition.entity_types and record.entity_type not in condition.entity_types:
            return None
        return float(record.count)
    if isinstance(condition, GuardBlockEvent) and isinstance(record, GuardDecision):
        if record.decision != "block" or (condition.checks and record.check not in condition.checks):
            return None
        return record.score
    return None


def match(rules: Sequence[Rule], records: Iterable[Record]) -> list[tuple[Rule, list[Observation]]]:
    """Observations per enabled event rule, one per label set that at least one record breached."""
    event_rules = [r for r in rules if r.enabled and r.event is not None]
    found: dict[tuple[str, str], dict[tuple[tuple[str, str], ...], Observation]] = {}
    for record in records:
        for rule in event_rules:
            value = breach_value(rule, record)
            if value is None:
                continue
            assert rule.event is not None  # event_rules holds event rules only
            all_labels = _labels(record)
            group = {name: all_labels[name] for name in rule.event.group_by}
            per_rule = found.setdefault((rule.project, rule.id), {})
            key = tuple(sorted(group.items()))
            previous = per_rule.get(key)
            count = previous.values["records"] + 1 if previous is not None else 1
            per_rule[key] = Observation(
                labels=group,
                value=max(value, previous.value) if previous is not None else value,
                values={"records": count},
                annotations={"trace_id": record.trace_id, "span_id": record.span_id},
            )
    by_key = {(r.project, r.id): r for r in event_rules}
    return [(by_key[key], list(observations.values())) for key, observations in found.items()]
