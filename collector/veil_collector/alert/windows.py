"""Window rules: one ClickHouse query per evaluation, returning the label sets above the threshold.

Every query is scoped to the rule's project and to ``(now - window, now]`` on the span timestamp. Errors are
spans with ``StatusCode = 'Error'`` (the OpenTelemetry ClickHouse exporter's spelling) or an ``error.type``;
latency is ``Duration`` (nanoseconds) in milliseconds; toxicity is the ``toxicity`` evaluator's
``toxicity`` label; an identity group is an ``identity`` evaluation labelled with the group.
"""

from __future__ import annotations

from typing import Any

from veil_collector.alert.lifecycle import Observation
from veil_collector.alert.rules import (
    BiasDisparityWindow,
    ErrorRateWindow,
    LatencyP95Window,
    TokenSpendWindow,
    ToxicRateWindow,
    WindowCondition,
)
from veil_collector.store import Store

_COLUMNS = {
    "service": "ServiceName",
    "environment": "Environment",
    "model": "RequestModel",
    "user": "UserId",
    "session": "SessionId",
}
_TIME = (
    "ProjectId = {project:String} AND Timestamp > fromUnixTimestamp64Milli({start:Int64}) "
    "AND Timestamp <= fromUnixTimestamp64Milli({end:Int64})"
)


def evaluate(store: Store, project: str, condition: WindowCondition, now: float) -> list[Observation]:
    """Label sets of ``condition`` breaching at ``now``: more than ``threshold`` with ``min_samples`` rows."""
    params: dict[str, Any] = {
        "project": project,
        "start": round((now - condition.window) * 1000),
        "end": round(now * 1000),
    }
    if isinstance(condition, BiasDisparityWindow):
        candidates = _bias(store, condition, params)
    else:
        candidates = _grouped(store, condition, params)
    return [obs for obs in candidates if obs.value > condition.threshold]


def _grouped(store: Store, condition: WindowCondition, params: dict[str, Any]) -> list[Observation]:
    where = _TIME
    if isinstance(condition, ToxicRateWindow):
        table = "evaluations"
        value = "countIf(Score >= {score:Float64}) / count()"
        where += " AND Evaluator = 'toxicity' AND Label = 'toxicity' AND Target = 'output'"
        params["score"] = condition.score_threshold
    elif isinstance(condition, ErrorRateWindow):
        table = "llm_calls"
        value = "countIf(StatusCode = 'Error' OR ErrorType != '') / count()"
    elif isinstance(condition, LatencyP95Window):
        table = "llm_calls"
        value = "quantile(0.95)(Duration) / 1e6"
    elif isinstance(condition, TokenSpendWindow):
        table = "llm_calls"
        value = (
            "sum(InputTokens + OutputTokens)" if condition.metric == "tokens" else "sum(ifNull(CostUsd, 0))"
        )
        for subject in ("user", "session"):
            if subject in condition.group_by:
                where += f" AND {_COLUMNS[subject]} != ''"
    else:
        raise TypeError(f"no query for window condition {condition.type!r}")
    columns = [_COLUMNS[label] for label in condition.group_by]
    select = ", ".join([*columns, f"toFloat64({value}) AS value", "count() AS samples"])
    sql = f"SELECT {select} FROM {table} WHERE {where}"
    if columns:
        sql += " GROUP BY " + ", ".join(columns)
    sql += " HAVING samples >= {min_samples:UInt64}"
    params["min_samples"] = condition.min_samples
    observations = []
    for row in store.query(sql, params).result_rows:
        labels = dict(zip(condition.group_by, (str(v) for v in row[: len(columns)]), strict=True))
        value_, samples = row[len(columns)], row[len(columns) + 1]
        observations.append(
            Observation(labels=labels, value=float(value_), values={"samples": float(samples)})
        )
    return observations


def _bias(store: Store, condition: BiasDisparityWindow, params: dict[str, Any]) -> list[Observation]:
    """Each group's toxic rate against the rate among outputs not mentioning it, in the same partition.

    Rates are smoothed (``(toxic + 0.5) / (n + 1)``) so that a clean background gives a finite ratio.
    """
    partition_labels = [label for label in condition.group_by if label != "group"]
    partition = [_COLUMNS[label] for label in partition_labels]
    params.update(
        score=condition.score_threshold, identity=condition.identity_threshold, target=condition.target
    )
    spans = (
        "SELECT TraceId, SpanId, any(ServiceName) AS ServiceName, any(RequestModel) AS RequestModel, "
        "max(Score) >= {score:Float64} AS toxic FROM evaluations "
        f"WHERE {_TIME} AND Evaluator = 'toxicity' AND Label = 'toxicity' AND Target = {{target:String}} "
        "GROUP BY TraceId, SpanId"
    )
    mentions = (
        "SELECT DISTINCT TraceId, SpanId, Label AS grp FROM evaluations "
        f"WHERE {_TIME} AND Evaluator = 'identity' AND Target = {{target:String}} "
        "AND Score >= {identity:Float64}"
    )
    keys = ", ".join(partition)
    totals_sql = (
        f"WITH spans AS ({spans}) SELECT {keys + ', ' if keys else ''}count() AS n, countIf(toxic) AS toxic "
        f"FROM spans{' GROUP BY ' + keys if keys else ''}"
    )
    groups_sql = (
        f"WITH spans AS ({spans}), mentions AS ({mentions}) "
        f"SELECT grp, {keys + ', ' if keys else ''}count() AS n, countIf(toxic) AS toxic "
        f"FROM spans INNER JOIN mentions USING (TraceId, SpanId) GROUP BY grp{', ' + keys if keys else ''}"
    )
    width = len(partition)
    totals = {
        tuple(row[:width]): (row[width], row[width + 1])
        for row in store.query(totals_sql, params).result_rows
    }
    observations = []
    for row in store.query(groups_sql, params).result_rows:
        group, part = row[0], tuple(row[1 : 1 + width])
        n, toxic = row[1 + width], row[2 + width]
        total_n, total_toxic = totals.get(part, (0, 0))
        bg_n, bg_toxic = total_n - n, total_toxic - toxic
        if n < condition.min_samples or bg_n < condition.min_samples:
            continue
        group_rate = (toxic + 0.5) / (n + 1)
        background_rate = (bg_toxic + 0.5) / (bg_n + 1)
        labels = {"group": str(group)}
        labels.update({label: str(v) for label, v in zip(partition_labels, part, strict=True)})
        observations.append(
            Observation(
                labels=labels,
                value=group_rate / background_rate,
                values={
                    "group_rate": toxic / n,
                    "background_rate": bg_toxic / bg_n,
                    "samples": float(n),
                    "background_samples": float(bg_n),
                },
            )
        )
    return observations
