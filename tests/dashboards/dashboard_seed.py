"""A realistic Veil workload written into every table the dashboards read, in the exact row shapes.

``seed_workload`` is the one place test data comes from; it can be switched to the demo workload
(``veil_collector.demo``) without touching the tests, which read only the returned :class:`Workload`.

Two projects: ``acme`` (two services, three models, two environments, users and sessions, errors,
toxic outputs, identity mentions, PII caught by the SDK and leaks caught by the server, guardrail
decisions, alerts and their deliveries) and ``globex`` (a small third service), so every query's project
scoping is exercised.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from veil_collector.records import Evaluation, GuardDecision, PiiFinding
from veil_collector.store import Store

PROJECT = "acme"
OTHER_PROJECT = "globex"
SERVICES = ("support-bot", "search-api")
MODELS = {  # request model -> (provider, USD per input token, USD per output token); None: unpriced
    "gpt-4o-mini": ("openai", 0.15e-6, 0.6e-6),
    "claude-sonnet-4": ("anthropic", 3e-6, 15e-6),
    "llama-3.1-8b-local": ("ollama", None, None),
}
ENVIRONMENTS = ("production", "staging")
TOXICITY_LABELS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
IDENTITY_GROUPS = ("female", "muslim", "black")
CLASSIFIER = ("detoxify-original", "0.5.2")
TOXIC_RESPONSE = "You are an idiot and I hate you."

TRACE_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
    "StatusMessage", "ProjectId",
)  # fmt: skip
LLM_CALL_COLUMNS = (
    "ProjectId", "Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "Duration", "ServiceName",
    "Environment", "Operation", "Provider", "RequestModel", "ResponseModel", "InputTokens", "OutputTokens",
    "CostUsd", "StatusCode", "ErrorType", "FinishReasons", "TimeToFirstChunk", "UserId", "SessionId", "Tags",
    "VeilBatch",
)  # fmt: skip
FEEDBACK_COLUMNS = ("ProjectId", "Timestamp", "TraceId", "SpanId", "Name", "Value", "Comment", "Author")
ALERT_COLUMNS = (
    "ProjectId", "Timestamp", "RuleId", "RuleName", "Fingerprint", "Status", "Severity", "Labels",
    "Annotations", "Value", "StartsAt", "EndsAt", "NotificationId",
)  # fmt: skip
DELIVERY_COLUMNS = (
    "ProjectId", "Timestamp", "NotificationId", "Fingerprint", "RuleId", "Destination", "DestinationType",
    "Attempt", "Outcome", "HttpStatus", "Error", "LatencyMs",
)  # fmt: skip


@dataclass
class Call:
    """Ground truth for one seeded GenAI call of project ``acme``."""

    trace_id: str
    service: str
    model: str
    environment: str
    user_id: str
    session_id: str
    error: bool
    toxic: bool
    leaked: int
    identity_group: str = ""


@dataclass
class Workload:
    """What ``seed_workload`` wrote, for tests to compare dashboard results against."""

    start: datetime
    end: datetime
    calls: list[Call] = field(default_factory=list)
    other_project_calls: int = 0
    other_project_leaks: int = 0
    server_leaks: int = 0
    blocks: int = 0
    firing_alerts: int = 0
    resolved_alerts: int = 0
    failed_deliveries: int = 0

    def count(self, **where: Any) -> int:
        """How many acme calls match every ``attribute=value`` (or ``attribute=(values...)``)."""
        return sum(
            all(getattr(c, k) in (v if isinstance(v, tuple) else (v,)) for k, v in where.items())
            for c in self.calls
        )

    def by(self, attribute: str) -> Counter[str]:
        return Counter(getattr(c, attribute) for c in self.calls)


def _hex(rng: random.Random, nbytes: int) -> str:
    return "".join(f"{rng.randrange(256):02x}" for _ in range(nbytes))


def _output_messages(text: str) -> str:
    return json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}]
    )


def seed_workload(store: Store, *, now: datetime, calls: int = 240, seed: int = 7) -> Workload:
    """Insert a two-hour workload ending one minute before ``now`` into every dashboard table.

    Args:
        store: a migrated store (the ``store`` fixture).
        now: the reference time (timezone-aware UTC); every row lies in ``[now - 2h, now - 1min]``.
        calls: how many GenAI calls project ``acme`` makes.
        seed: the random seed; the workload is deterministic for a given seed.

    Returns:
        The ground truth the tests assert against.
    """
    rng = random.Random(seed)
    start, end = now - timedelta(hours=2), now - timedelta(minutes=1)
    workload = Workload(start=start, end=end)
    spans: list[tuple] = []
    llm_calls: list[tuple] = []
    evaluations: list[Evaluation] = []
    findings: list[PiiFinding] = []
    decisions: list[GuardDecision] = []
    feedback: list[tuple] = []

    def add_call(i: int, project: str, service: str, model: str, environment: str) -> Call:
        at = start + (end - start) * (i + rng.random()) / calls
        trace_id, root_id, chat_id = _hex(rng, 16), _hex(rng, 8), _hex(rng, 8)
        user_id, session_id = f"u-{rng.randrange(1, 13)}", f"s-{rng.randrange(1, 31)}"
        error = i % 17 == 5
        toxic = i % 8 == 0 or rng.random() < 0.05
        input_tokens, output_tokens = rng.randrange(200, 2000), rng.randrange(20, 600)
        duration = rng.randrange(300, 4000) * 1_000_000
        provider, in_price, out_price = MODELS[model]
        cost = None if in_price is None else input_tokens * in_price + output_tokens * out_price
        resource = {"service.name": service, "deployment.environment.name": environment}
        status = "Error" if error else "Unset"
        tags = ["beta"] if i % 3 == 0 else []
        response = TOXIC_RESPONSE if toxic else "Your order ships tomorrow."
        chat_attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": str(input_tokens),
            "gen_ai.usage.output_tokens": str(output_tokens),
            "gen_ai.output.messages": _output_messages(response),
            "user.id": user_id,
            "session.id": session_id,
        }
        root_attrs = {"gen_ai.operation.name": "invoke_agent", "user.id": user_id, "session.id": session_id}
        spans.append(
            (at, trace_id, root_id, "", "", "invoke_agent support", "Server", service, resource, "veil",
             "0.1.0", root_attrs, duration + 40_000_000, status, "", project)
        )  # fmt: skip
        chat_at = at + timedelta(milliseconds=20)
        spans.append(
            (chat_at, trace_id, chat_id, root_id, "", f"chat {model}", "Client", service, resource, "veil",
             "0.1.0", chat_attrs, duration, status, "upstream 503" if error else "", project)
        )  # fmt: skip
        llm_calls.append(
            (project, chat_at, trace_id, chat_id, root_id, f"chat {model}", duration, service, environment,
             "chat", provider, model, model, input_tokens, output_tokens, cost, status,
             "http.503" if error else "", ["stop"], 0.0, user_id, session_id, tags, 1)
        )  # fmt: skip
        evaluated_at = chat_at + timedelta(seconds=2)
        for label in TOXICITY_LABELS:
            base = rng.uniform(0.6, 0.99) if toxic else rng.uniform(0.0, 0.3)
            score = base if label in ("toxicity", "insult") else base * rng.uniform(0.1, 0.6)
            evaluations.append(
                Evaluation(project, chat_at, evaluated_at, trace_id, chat_id, service, environment, model,
                           "output", "toxicity", label, score, *CLASSIFIER)
            )  # fmt: skip
        group = IDENTITY_GROUPS[i % len(IDENTITY_GROUPS)] if i % 4 == 0 else ""
        if group:
            evaluations.append(
                Evaluation(project, chat_at, evaluated_at, trace_id, chat_id, service, environment, model,
                           "output", "identity", group, 0.92, *CLASSIFIER, "mentions the group")
            )  # fmt: skip
        if i % 3 == 0:
            findings.append(
                PiiFinding(project, chat_at, trace_id, chat_id, service, "EMAIL_ADDRESS", 1, "pattern",
                           "input", "sdk", True, False)
            )  # fmt: skip
        leaked = 0
        if i % 10 == 0:
            leaked = 1 + i % 2
            findings.append(
                PiiFinding(project, chat_at, trace_id, chat_id, service, "PHONE_NUMBER", leaked, "ner",
                           "output", "server", True, True)
            )  # fmt: skip
        pii_decision = "redact" if i % 3 == 0 else "pass"
        toxicity_decision = "block" if toxic else ("flag" if i % 11 == 0 else "pass")
        for target, check, decision, score in (
            ("input", "pii", pii_decision, 1.0 if pii_decision == "redact" else 0.0),
            ("output", "toxicity", toxicity_decision, 0.9 if toxic else 0.1),
        ):
            decisions.append(
                GuardDecision(project, chat_at, trace_id, chat_id, service, environment, model, target, check,
                              decision, score, "sdk")
            )  # fmt: skip
        if i % 9 == 0:
            feedback.append((project, evaluated_at, trace_id, chat_id, "toxicity", float(toxic), "", user_id))
        return Call(trace_id, service, model, environment, user_id, session_id, error, toxic, leaked, group)

    models = list(MODELS)
    for i in range(calls):
        call = add_call(i, PROJECT, SERVICES[i % 2], models[i % 3], ENVIRONMENTS[(i // 2) % 2])
        workload.calls.append(call)
    other = calls // 10
    for i in range(other):
        workload.other_project_leaks += add_call(
            i, OTHER_PROJECT, "billing-bot", "gpt-4o-mini", "production"
        ).leaked
    workload.other_project_calls = other
    workload.server_leaks = sum(c.leaked for c in workload.calls)
    workload.blocks = sum(c.toxic for c in workload.calls)

    store.insert("otel_traces", spans, TRACE_COLUMNS)
    store.insert("llm_calls", llm_calls, LLM_CALL_COLUMNS)
    store.insert(Evaluation.TABLE, [e.as_row() for e in evaluations], Evaluation.COLUMNS)
    store.insert(PiiFinding.TABLE, [f.as_row() for f in findings], PiiFinding.COLUMNS)
    store.insert(GuardDecision.TABLE, [d.as_row() for d in decisions], GuardDecision.COLUMNS)
    store.insert("feedback", feedback, FEEDBACK_COLUMNS)
    _seed_alerts(store, workload, rng)
    return workload


def _seed_alerts(store: Store, workload: Workload, rng: random.Random) -> None:
    """Two rules: one fired and resolved, one still firing; each notification delivered three ways."""
    labels = {"service": "support-bot", "model": "gpt-4o-mini", "environment": "production"}
    alerts: list[tuple] = []
    deliveries: list[tuple] = []
    t0 = workload.start + timedelta(minutes=30)
    history = (
        ("toxicity-rate", "Toxic output rate above 10%", "warning", t0, t0 + timedelta(minutes=30)),
        ("pii-leak", "PII leaked past the SDK", "critical", workload.end - timedelta(minutes=20), None),
    )
    for rule_id, rule_name, severity, starts_at, ends_at in history:
        fingerprint = _hex(rng, 8)
        changes = [("firing", starts_at, None)] + ([("resolved", ends_at, ends_at)] if ends_at else [])
        for status, at, ended in changes:
            notification = _hex(rng, 16)
            alerts.append(
                (PROJECT, at, rule_id, rule_name, fingerprint, status, severity, {**labels, "rule": rule_id},
                 {"summary": rule_name}, 0.14, starts_at, ended, notification)
            )  # fmt: skip
            attempts = (
                ("ops-webhook", "webhook", 1, "delivered", 200, ""),
                ("slack-alerts", "slack", 1, "retry", 503, "503 Service Unavailable"),
                ("slack-alerts", "slack", 2, "delivered", 200, ""),
                ("pagerduty", "pagerduty", 1, "failed", 400, "400 Bad Request: invalid routing key"),
            )
            for n, (destination, kind, attempt, outcome, http_status, error) in enumerate(attempts):
                deliveries.append(
                    (PROJECT, at + timedelta(seconds=1 + n), notification, fingerprint, rule_id, destination,
                     kind, attempt, outcome, http_status, error, rng.uniform(20, 300))
                )  # fmt: skip
                workload.failed_deliveries += outcome == "failed"
        workload.firing_alerts += ends_at is None
        workload.resolved_alerts += ends_at is not None
    store.insert("alerts", alerts, ALERT_COLUMNS)
    store.insert("deliveries", deliveries, DELIVERY_COLUMNS)
