"""Window rules on seeded ClickHouse rows: each fires and resolves at the right evaluation.

"Now" is driven by the test (``evaluate(now)``); rows are placed relative to it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from veil_collector.alert import AlertEngine
from veil_collector.alert.rules import RuleSpec
from veil_collector.alert.windows import evaluate as evaluate_window

T0 = 1_800_000_000.0
DEST = '[{name: ops, type: webhook, url: "http://127.0.0.1:9/hook"}]'

CALL_COLUMNS = (
    "ProjectId", "Timestamp", "TraceId", "SpanId", "ServiceName", "Environment", "RequestModel", "Duration",
    "InputTokens", "OutputTokens", "CostUsd", "StatusCode", "ErrorType", "UserId", "SessionId",
)  # fmt: skip
EVAL_COLUMNS = (
    "ProjectId", "Timestamp", "EvaluatedAt", "TraceId", "SpanId", "ServiceName", "Environment",
    "RequestModel", "Target", "Evaluator", "Label", "Score", "ModelName", "ModelVersion",
)  # fmt: skip


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def seed_calls(store: Any, rows: list[dict[str, Any]]) -> None:
    defaults = {
        "ProjectId": "default", "TraceId": "t", "SpanId": "s", "ServiceName": "chat", "Environment": "prod",
        "RequestModel": "gpt-4o", "Duration": 100_000_000, "InputTokens": 10, "OutputTokens": 10,
        "CostUsd": 0.001, "StatusCode": "Ok", "ErrorType": "", "UserId": "", "SessionId": "",
    }  # fmt: skip
    store.insert(
        "llm_calls",
        [
            [{**defaults, **row}[c] if c != "Timestamp" else at(row["ts"]) for c in CALL_COLUMNS]
            for row in rows
        ],
        CALL_COLUMNS,
    )


def seed_evaluations(store: Any, rows: list[dict[str, Any]]) -> None:
    defaults = {
        "ProjectId": "default", "ServiceName": "chat", "Environment": "prod", "RequestModel": "gpt-4o",
        "Target": "output", "Evaluator": "toxicity", "Label": "toxicity", "ModelName": "m",
        "ModelVersion": "1",
    }  # fmt: skip
    data = []
    for row in rows:
        full = {**defaults, **row, "Timestamp": at(row["ts"]), "EvaluatedAt": at(row["ts"])}
        data.append([full[c] for c in EVAL_COLUMNS])
    store.insert("evaluations", data, EVAL_COLUMNS)


def test_error_rate_waits_for_its_duration_then_fires_and_resolves(
    settings_factory: Callable[..., Any], store: Any
) -> None:
    rules = f"""
rules:
  - id: errors
    name: Error rate
    window: {{type: error_rate, window: 5m, threshold: 0.2, min_samples: 5}}
    for: 60s
    every: 30s
    destinations: {DEST}
"""
    # chat: 3 errors in 10 calls (0.3); search: 0 in 10; tiny: 2 errors in 2 calls, below min_samples.
    rows = [
        {"ts": T0 - 100 + i, "SpanId": f"c{i}", "StatusCode": "Error" if i < 2 else "Ok"} for i in range(10)
    ]
    rows[2]["ErrorType"] = "RateLimitError"
    rows += [{"ts": T0 - 100 + i, "ServiceName": "search"} for i in range(10)]
    rows += [{"ts": T0 - 50, "ServiceName": "tiny", "StatusCode": "Error"}] * 2
    seed_calls(store, rows)
    engine = AlertEngine(settings_factory(rules), store)

    assert engine.evaluate(T0) == []  # pending
    assert [a["status"] for a in engine.active("default")] == ["pending"]
    assert engine.evaluate(T0 + 10) == []  # not due: every 30s
    assert engine.evaluate(T0 + 30) == []  # pending for 30s < 60s
    [fired] = engine.evaluate(T0 + 60)
    assert (fired.status, fired.labels["service"], fired.starts_at) == ("firing", "chat", T0 + 60)
    assert abs(fired.value - 0.3) < 1e-9 and fired.values == {"samples": 10.0}
    assert engine.evaluate(T0 + 90) == []  # firing: deduplicated
    assert engine.evaluate(T0 + 180) == []  # rows at T0-100..T0-91 are still inside (now-300, now]
    [resolved] = engine.evaluate(T0 + 210)  # T0-91 <= now-300: the window is empty
    assert (resolved.status, resolved.fingerprint, resolved.ends_at) == (
        "resolved",
        fired.fingerprint,
        T0 + 210,
    )
    assert engine.active("default") == []
    assert [r["Status"] for r in engine.history("default", rule_id="errors")] == ["resolved", "firing"]


def test_a_breach_shorter_than_for_never_fires(settings_factory: Callable[..., Any], store: Any) -> None:
    rules = f"""
rules:
  - id: errors
    name: Error rate
    window: {{type: error_rate, window: 60s, threshold: 0.5}}
    for: 2m
    every: 30s
    destinations: {DEST}
"""
    seed_calls(store, [{"ts": T0 - 10, "StatusCode": "Error"}])
    engine = AlertEngine(settings_factory(rules), store)
    assert engine.evaluate(T0) == []
    assert engine.evaluate(T0 + 30) == []
    assert engine.evaluate(T0 + 60) == []  # the error left the 60s window: pending is forgotten
    assert engine.active("default") == [] and engine.outbox_counts() == {}


def window_of(kind: str, **fields: Any) -> RuleSpec:
    return RuleSpec.model_validate(
        {
            "id": kind,
            "name": kind,
            "window": {"type": kind, **fields},
            "destinations": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook"}],
        }
    )


def test_p95_latency_per_model(store: Any) -> None:
    slow = [{"ts": T0 - i, "RequestModel": "slow", "Duration": (i + 1) * 100_000_000} for i in range(20)]
    fast = [{"ts": T0 - i, "RequestModel": "fast", "Duration": 50_000_000} for i in range(20)]
    seed_calls(store, slow + fast)
    spec = window_of("latency_p95", threshold=1500, group_by=["model"], window="1m")
    [obs] = evaluate_window(store, "default", spec.window, T0)
    assert obs.labels == {"model": "slow"}
    assert 1800 <= obs.value <= 2000  # p95 of 100..2000 ms
    assert evaluate_window(store, "other-project", spec.window, T0) == []


def test_token_spend_per_user_and_cost(store: Any) -> None:
    rows = [{"ts": T0 - i, "UserId": "alice", "InputTokens": 400, "OutputTokens": 200} for i in range(5)]
    rows += [{"ts": T0 - i, "UserId": "bob", "InputTokens": 10, "OutputTokens": 10} for i in range(5)]
    rows += [{"ts": T0 - 1, "UserId": "", "InputTokens": 99_999}]  # anonymous calls are not a user
    rows += [{"ts": T0 - 4000, "UserId": "bob", "InputTokens": 99_999}]  # outside the window
    seed_calls(store, rows)
    tokens = window_of("token_spend", threshold=1000, window="1h", group_by=["user"])
    [obs] = evaluate_window(store, "default", tokens.window, T0)
    assert (obs.labels, obs.value) == ({"user": "alice"}, 3000.0)
    cost = window_of("token_spend", threshold=0.004, window="1h", group_by=["user"], metric="cost_usd")
    assert {o.labels["user"] for o in evaluate_window(store, "default", cost.window, T0)} == {"alice", "bob"}


def test_toxic_output_rate(store: Any) -> None:
    rows = [
        {"ts": T0 - i, "TraceId": f"t{i}", "SpanId": "s", "Score": 0.9 if i < 3 else 0.1} for i in range(10)
    ]
    rows += [{"ts": T0 - 1, "TraceId": "in", "SpanId": "s", "Score": 0.99, "Target": "input"}] * 5
    seed_evaluations(store, rows)
    spec = window_of("toxic_rate", threshold=0.2, score_threshold=0.5, window="5m", min_samples=5)
    [obs] = evaluate_window(store, "default", spec.window, T0)
    assert obs.labels == {"service": "chat"} and abs(obs.value - 0.3) < 1e-9
    stricter = window_of("toxic_rate", threshold=0.3, window="5m")
    assert evaluate_window(store, "default", stricter.window, T0) == []


def test_bias_disparity_fires_for_the_group_treated_worse(store: Any) -> None:
    rows: list[dict[str, Any]] = []
    # 20 outputs mention group "g1": 10 toxic; 20 mention "g2": 1 toxic; 60 mention no group: 3 toxic.
    for i in range(100):
        trace = f"t{i}"
        if i < 20:
            toxic, group = i < 10, "g1"
        elif i < 40:
            toxic, group = i == 20, "g2"
        else:
            toxic, group = i < 43, None
        rows.append({"ts": T0 - 1, "TraceId": trace, "SpanId": "s", "Score": 0.9 if toxic else 0.05})
        if group is not None:
            rows.append(
                {
                    "ts": T0 - 1,
                    "TraceId": trace,
                    "SpanId": "s",
                    "Evaluator": "identity",
                    "Label": group,
                    "Score": 0.8,
                }
            )
    seed_evaluations(store, rows)
    spec = window_of("bias_disparity", threshold=2.0, window="5m", min_samples=10)
    [obs] = evaluate_window(store, "default", spec.window, T0)
    assert obs.labels == {"group": "g1"}
    assert obs.values["group_rate"] == 0.5
    assert abs(obs.values["background_rate"] - 4 / 80) < 1e-9
    assert obs.value > 2.0
