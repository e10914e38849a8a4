"""Alerts: rules over stored records and ClickHouse windows, delivered through a durable outbox.

``AlertEngine`` is the entry point (it implements :class:`veil_collector.records.EventSink`); ``rules``
holds the rule model and the YAML loader, ``rulestore`` keeps the rules in ClickHouse for every collector,
``leader`` chooses the one collector that evaluates window rules; the rest are its parts, in data-flow
order: ``events`` and ``windows`` (conditions) → ``lifecycle`` (firing/resolved, fingerprints) →
``outbox`` → ``relay`` (HTTP, retries) with ``notification`` (bodies) and ``signing`` (Standard Webhooks).
"""

from veil_collector.alert.engine import AlertEngine
from veil_collector.alert.rules import Rule, RulesFileError, RuleSpec, load_rules_file

__all__ = ["AlertEngine", "Rule", "RuleSpec", "RulesFileError", "load_rules_file"]
