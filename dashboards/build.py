"""Generate Veil's Grafana dashboards and their Kubernetes ConfigMaps from one definition.

Run ``python dashboards/build.py`` after editing a panel or a provisioning file: it rewrites
``dashboards/json/*.json`` (the files Grafana imports and ``veil grafana push`` uploads) and the Grafana
ConfigMaps in ``deploy/kubernetes/grafana/``.
``tests/dashboards`` fails when the committed files differ from what this script generates, so the
JSON never drifts from its source.

Every panel is a SQL target of the ``grafana-clickhouse-datasource`` plugin on the fixed datasource uid
``veil-clickhouse``. Every query is scoped to one project (``ProjectId = ${project:singlequote}``) and
the time picker (``$__timeFilter``); the service, model and environment variables are multi-value with
"All", applied through ``$__conditionalAll`` so that "All" costs nothing (the condition becomes ``1=1``).
``$__conditionalAll`` splits its arguments on top-level commas, so a condition must keep its commas
inside parentheses.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent
JSON_DIR = ROOT / "json"

DATASOURCE_UID = "veil-clickhouse"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": DATASOURCE_UID}
FOLDER_UID = "veil"
TAG = "veil"
TRACES_UID = "veil-traces"

# Grafana SQL target formats (sqlds): 0 time series, 1 table, 3 traces.
TIME_SERIES, TABLE, TRACES = 0, 1, 3

PROJECT = "ProjectId = ${project:singlequote}"
TIME = "$__timeFilter(Timestamp)"
BUCKET = "toStartOfInterval(Timestamp, INTERVAL $__interval_s second) AS time"
TOXICITY = "Evaluator = 'toxicity' AND Label = 'toxicity' AND Target = 'output'"
THRESHOLD = "${toxicity_threshold}"


def _in(expr: str, var: str) -> str:
    return f"{expr} IN (${{{var}:singlequote}})"


def _conditional(var: str, condition: str) -> str:
    return f"$__conditionalAll({condition}, ${var})"


@dataclass(frozen=True)
class Scope:
    """How the dashboard variables filter one table.

    Args:
        service: condition on the service variable, or an expression compared with ``IN``.
        model: same for the model variable.
        environment: same for the environment variable.
        raw: when true the three values are complete conditions, not expressions.
    """

    service: str
    model: str
    environment: str
    raw: bool = False

    def where(self) -> str:
        """The WHERE clause: project, time range, then the three ``$__conditionalAll`` filters."""
        parts = [PROJECT, TIME]
        for var, expr in (
            ("service", self.service),
            ("model", self.model),
            ("environment", self.environment),
        ):
            parts.append(_conditional(var, expr if self.raw else _in(expr, var)))
        return "\n  AND ".join(parts)


# Tables with the typed ServiceName / RequestModel / Environment columns.
TYPED = Scope("ServiceName", "RequestModel", "Environment")
SPANS = Scope(
    "ServiceName",
    "SpanAttributes['gen_ai.request.model']",
    "ResourceAttributes['deployment.environment.name']",
)


def _via_llm_calls(column: str, var: str) -> str:
    # pii_findings has no model or environment: keep the spans whose GenAI call matches.
    return f"SpanId IN (SELECT SpanId FROM llm_calls WHERE {PROJECT} AND {TIME} AND {_in(column, var)})"


PII = Scope(
    _in("ServiceName", "service"),
    _via_llm_calls("RequestModel", "model"),
    _via_llm_calls("Environment", "environment"),
    raw=True,
)
# Alert rules scoped to a service, model or environment carry it as a label of that name.
ALERTS = Scope("Labels['service']", "Labels['model']", "Labels['environment']")


def _via_alerts(label: str, var: str) -> str:
    condition = _in(f"Labels['{label}']", var)
    return f"Fingerprint IN (SELECT Fingerprint FROM alerts WHERE {PROJECT} AND {condition})"


DELIVERIES = Scope(
    _via_alerts("service", "service"),
    _via_alerts("model", "model"),
    _via_alerts("environment", "environment"),
    raw=True,
)


def sql(text: str) -> str:
    """Strip the source indentation of a query (its first line's) so the JSON stays readable.

    Lines indented less than the first line (the continuation lines of an interpolated WHERE clause)
    are left as they are.
    """
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    indent = len(lines[0]) - len(lines[0].lstrip())
    return "\n".join(line[indent:] if line.startswith(" " * indent) else line for line in lines)


# ---------------------------------------------------------------------------------------------------------
# Variables


def _query_variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    current = {"text": ["All"], "value": ["$__all"]} if multi else {}
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": current,
        "options": [],
        "hide": 0,
    }


def _textbox(name: str, label: str) -> dict[str, Any]:
    return {
        "type": "textbox",
        "name": name,
        "label": label,
        "query": "",
        "current": {"text": "", "value": ""},
        "hide": 0,
    }


def variables(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """project (single), then service, model and environment (multi, All), each scoped by project."""
    project = sql(
        """
        SELECT ProjectId FROM (
          SELECT ProjectId FROM projects FINAL WHERE Deleted = 0
          UNION DISTINCT
          SELECT DISTINCT ProjectId FROM llm_calls WHERE $__timeFilter(Timestamp)
        ) ORDER BY ProjectId
        """
    )
    service = f"SELECT DISTINCT ServiceName FROM otel_traces WHERE {PROJECT} AND {TIME} ORDER BY ServiceName"
    model = (
        f"SELECT DISTINCT RequestModel FROM llm_calls WHERE {PROJECT} AND {TIME} AND RequestModel != '' "
        "ORDER BY RequestModel"
    )
    environment = (
        f"SELECT DISTINCT Environment FROM llm_calls WHERE {PROJECT} AND {TIME} AND Environment != '' "
        "ORDER BY Environment"
    )
    return [
        _query_variable("project", "Project", project, multi=False),
        _query_variable("service", "Service", service, multi=True),
        _query_variable("model", "Model", model, multi=True),
        _query_variable("environment", "Environment", environment, multi=True),
        *extra,
    ]


TOXICITY_THRESHOLD = {
    "type": "custom",
    "name": "toxicity_threshold",
    "label": "Toxic at score",
    "query": "0.5,0.7,0.9",
    "current": {"text": "0.5", "value": "0.5"},
    "options": [
        {"text": value, "value": value, "selected": value == "0.5"} for value in ("0.5", "0.7", "0.9")
    ],
    "multi": False,
    "includeAll": False,
    "hide": 0,
}


# ---------------------------------------------------------------------------------------------------------
# Panels


@dataclass
class Panel:
    """One panel with one SQL target; the layout assigns ``gridPos`` and ``id``."""

    type: str
    title: str
    query: str
    fmt: int
    width: int
    height: int
    description: str = ""
    unit: str | None = None
    overrides: tuple[dict[str, Any], ...] = ()
    options: dict[str, Any] | None = None

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        query_type = {TIME_SERIES: "timeseries", TABLE: "table", TRACES: "traces"}[self.fmt]
        defaults: dict[str, Any] = {}
        if self.unit:
            defaults["unit"] = self.unit
        panel: dict[str, Any] = {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
            "datasource": DATASOURCE,
            "targets": [
                {
                    "refId": "A",
                    "datasource": DATASOURCE,
                    "editorType": "sql",
                    "format": self.fmt,
                    "queryType": query_type,
                    "rawSql": self.query,
                }
            ],
            "fieldConfig": {"defaults": defaults, "overrides": list(self.overrides)},
            "options": self.options or {},
        }
        return panel


def stat(title: str, query: str, *, unit: str = "short", description: str = "", width: int = 4) -> Panel:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
    }
    return Panel("stat", title, sql(query), TABLE, width, 4, description, unit, options=options)


def timeseries(
    title: str, query: str, *, unit: str = "short", description: str = "", width: int = 12
) -> Panel:
    options = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    return Panel("timeseries", title, sql(query), TIME_SERIES, width, 8, description, unit, options=options)


def table(
    title: str,
    query: str,
    *,
    units: dict[str, str] | None = None,
    trace_column: str | None = None,
    description: str = "",
    width: int = 12,
    height: int = 9,
) -> Panel:
    overrides = [_unit(column, unit) for column, unit in (units or {}).items()]
    if trace_column:
        overrides.append(_trace_link(trace_column))
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return Panel(
        "table", title, sql(query), TABLE, width, height, description, None, tuple(overrides), options
    )


def barchart(title: str, query: str, *, description: str = "", width: int = 12, unit: str = "short") -> Panel:
    options = {
        "orientation": "auto",
        "showValue": "auto",
        "legend": {"displayMode": "list", "placement": "bottom"},
    }
    return Panel("barchart", title, sql(query), TABLE, width, 8, description, unit, options=options)


def _unit(column: str, unit: str) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "unit", "value": unit}]}


def _trace_link(column: str) -> dict[str, Any]:
    """A link from a trace id cell to the Traces dashboard, which shows that trace in Grafana's trace view."""
    url = (
        f"/d/{TRACES_UID}/veil-traces?var-project=${{project}}&var-trace_id=${{__value.raw}}"
        "&${__url_time_range}"
    )
    link = {"title": "Open trace ${__value.raw}", "url": url, "targetBlank": False}
    return {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "links", "value": [link]}]}


def layout(rows: list[list[Panel]]) -> list[dict[str, Any]]:
    """Place rows of panels top to bottom on Grafana's 24-column grid; ids follow reading order."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in rows:
        if sum(p.width for p in row) > 24:
            raise ValueError(f"row {[p.title for p in row]} is wider than 24 columns")
        x = 0
        for panel in row:
            panels.append(panel.to_json(len(panels) + 1, x, y))
            x += panel.width
        y += max(p.height for p in row)
    return panels


def dashboard(uid: str, title: str, description: str, rows: list[list[Panel]], *extra_vars: dict) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "title": "Veil",
                "tags": [TAG],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables(*extra_vars)},
        "panels": layout(rows),
    }


# ---------------------------------------------------------------------------------------------------------
# Dashboards


def overview() -> dict:
    where = TYPED.where()
    rows = [
        [
            stat("Requests", f"SELECT count() AS requests FROM llm_calls WHERE {where}"),
            stat(
                "Error rate",
                f"SELECT countIf(StatusCode = 'Error') / greatest(count(), 1) AS error_rate "
                f"FROM llm_calls WHERE {where}",
                unit="percentunit",
            ),
            stat(
                "Latency p95",
                f"SELECT quantile(0.95)(Duration) / 1e6 AS p95_ms FROM llm_calls WHERE {where}",
                unit="ms",
            ),
            stat("Tokens", f"SELECT sum(InputTokens + OutputTokens) AS tokens FROM llm_calls WHERE {where}"),
            stat(
                "Cost",
                f"SELECT sum(CostUsd) AS cost_usd FROM llm_calls WHERE {where}",
                unit="currencyUSD",
                description="Calls to models without a known price are not counted.",
            ),
            stat(
                "Users",
                f"SELECT uniqExactIf(UserId, UserId != '') AS users FROM llm_calls WHERE {where}",
            ),
        ],
        [
            timeseries(
                "Requests and errors",
                f"""
                SELECT {BUCKET}, count() AS requests, countIf(StatusCode = 'Error') AS errors
                FROM llm_calls
                WHERE {where}
                GROUP BY time ORDER BY time
                """,
            ),
            timeseries(
                "Latency p50 / p95 / p99",
                f"""
                SELECT {BUCKET},
                  quantile(0.5)(Duration) / 1e6 AS p50_ms,
                  quantile(0.95)(Duration) / 1e6 AS p95_ms,
                  quantile(0.99)(Duration) / 1e6 AS p99_ms
                FROM llm_calls
                WHERE {where}
                GROUP BY time ORDER BY time
                """,
                unit="ms",
            ),
        ],
        [
            timeseries(
                "Tokens by model",
                f"""
                SELECT {BUCKET}, RequestModel AS model, sum(InputTokens + OutputTokens) AS tokens
                FROM llm_calls
                WHERE {where}
                GROUP BY time, model ORDER BY time
                """,
            ),
            timeseries(
                "Cost by service",
                f"""
                SELECT {BUCKET}, ServiceName AS service, sum(CostUsd) AS cost_usd
                FROM llm_calls
                WHERE {where}
                GROUP BY time, service ORDER BY time
                """,
                unit="currencyUSD",
            ),
        ],
        [
            table(
                "Tokens and cost by model and service",
                f"""
                SELECT RequestModel AS model, ServiceName AS service, count() AS requests,
                  sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens,
                  sum(CostUsd) AS cost_usd, quantile(0.95)(Duration) / 1e6 AS p95_ms,
                  countIf(StatusCode = 'Error') AS errors
                FROM llm_calls
                WHERE {where}
                GROUP BY model, service ORDER BY cost_usd DESC, requests DESC
                """,
                units={"cost_usd": "currencyUSD", "p95_ms": "ms"},
                width=24,
                height=8,
            )
        ],
        [
            table(
                "Top users",
                f"""
                SELECT UserId AS user, count() AS requests, uniqExact(SessionId) AS sessions,
                  sum(InputTokens + OutputTokens) AS tokens, sum(CostUsd) AS cost_usd,
                  max(Timestamp) AS last_seen
                FROM llm_calls
                WHERE {where} AND UserId != ''
                GROUP BY user ORDER BY requests DESC LIMIT 20
                """,
                units={"cost_usd": "currencyUSD"},
            ),
            table(
                "Top sessions",
                f"""
                SELECT SessionId AS session, any(UserId) AS user, count() AS requests,
                  sum(InputTokens + OutputTokens) AS tokens, sum(CostUsd) AS cost_usd,
                  min(Timestamp) AS started, max(Timestamp) AS last_seen,
                  argMax(TraceId, Timestamp) AS last_trace_id
                FROM llm_calls
                WHERE {where} AND SessionId != ''
                GROUP BY session ORDER BY requests DESC LIMIT 20
                """,
                units={"cost_usd": "currencyUSD"},
                trace_column="last_trace_id",
            ),
        ],
    ]
    return dashboard(
        "veil-overview",
        "Veil / Overview",
        "LLM traffic: requests, latency, errors, tokens and cost by model and service; "
        "top users and sessions.",
        rows,
    )


def safety() -> dict:
    where = TYPED.where()
    toxicity = f"{where}\n  AND {TOXICITY}"
    rows = [
        [
            stat(
                "Toxic outputs",
                f"SELECT avg(Score >= {THRESHOLD}) AS toxic_rate FROM evaluations WHERE {toxicity}",
                unit="percentunit",
                width=6,
            ),
            stat(
                "Scored outputs",
                f"SELECT count() AS scored FROM evaluations WHERE {toxicity}",
                width=6,
            ),
            stat(
                "Mean toxicity",
                f"SELECT avg(Score) AS mean_toxicity FROM evaluations WHERE {toxicity}",
                unit="percentunit",
                width=6,
            ),
            stat(
                "Outputs naming an identity group",
                f"""
                SELECT uniqExact(SpanId) AS outputs FROM evaluations
                WHERE {where}
                  AND Evaluator = 'identity' AND Target = 'output' AND Score >= 0.5
                """,
                width=6,
            ),
        ],
        [
            timeseries(
                "Toxic-output rate",
                f"""
                SELECT {BUCKET}, avg(Score >= {THRESHOLD}) AS toxic_rate
                FROM evaluations
                WHERE {toxicity}
                GROUP BY time ORDER BY time
                """,
                unit="percentunit",
            ),
            barchart(
                "Toxicity score distribution",
                f"""
                SELECT toString(floor(Score * 10) / 10) AS score, count() AS outputs
                FROM evaluations
                WHERE {toxicity}
                GROUP BY score ORDER BY score
                """,
                description="Outputs per toxicity score decile (0.0 means a score in [0, 0.1)).",
            ),
        ],
        [
            table(
                "Per-label breakdown",
                f"""
                SELECT Label AS label, count() AS scored, countIf(Score >= {THRESHOLD}) AS flagged,
                  avg(Score >= {THRESHOLD}) AS flagged_rate, avg(Score) AS mean_score,
                  quantile(0.95)(Score) AS p95_score
                FROM evaluations
                WHERE {where}
                  AND Evaluator = 'toxicity' AND Target = 'output'
                GROUP BY label ORDER BY flagged DESC, label
                """,
                units={"flagged_rate": "percentunit"},
            ),
            table(
                "Toxicity by identity group against the background",
                f"""
                WITH
                  tox AS (
                    SELECT SpanId, max(Score) >= {THRESHOLD} AS toxic FROM evaluations
                    WHERE {toxicity}
                    GROUP BY SpanId
                  ),
                  groups AS (
                    SELECT DISTINCT SpanId, Label AS identity_group FROM evaluations
                    WHERE {where}
                      AND Evaluator = 'identity' AND Target = 'output' AND Score >= 0.5
                  )
                SELECT g.identity_group AS identity_group, count() AS outputs,
                  avg(t.toxic) AS toxic_rate,
                  ((SELECT sum(toxic) FROM tox) - sum(t.toxic))
                    / greatest((SELECT count() FROM tox) - count(), 1) AS background_toxic_rate,
                  toxic_rate - background_toxic_rate AS gap
                FROM groups AS g INNER JOIN tox AS t ON g.SpanId = t.SpanId
                GROUP BY identity_group ORDER BY gap DESC
                """,
                units={
                    "toxic_rate": "percentunit",
                    "background_toxic_rate": "percentunit",
                    "gap": "percentunit",
                },
                description=(
                    "Toxic-output rate of outputs that mention a group against all other outputs "
                    "(the background), the Jigsaw bias view."
                ),
            ),
        ],
        [
            table(
                "Most toxic responses",
                f"""
                SELECT e.Timestamp AS time, e.TraceId AS trace_id, e.ServiceName AS service,
                  e.RequestModel AS model, e.Score AS toxicity, e.ModelName AS classifier,
                  arrayStringConcat(
                    arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(s.output, 1, 'parts')),
                    ' ') AS response
                FROM (
                  SELECT Timestamp, TraceId, SpanId, ServiceName, RequestModel, Score, ModelName
                  FROM evaluations
                  WHERE {toxicity}
                  ORDER BY Score DESC LIMIT 50
                ) AS e
                LEFT JOIN (
                  SELECT SpanId, SpanAttributes['gen_ai.output.messages'] AS output FROM otel_traces
                  WHERE {PROJECT} AND {TIME} AND mapContains(SpanAttributes, 'gen_ai.output.messages')
                ) AS s ON s.SpanId = e.SpanId
                ORDER BY toxicity DESC
                """,
                units={"toxicity": "percentunit"},
                trace_column="trace_id",
                width=24,
                height=10,
                description="The scrubbed response text as stored; click a trace id for the whole trace.",
            ),
        ],
    ]
    return dashboard(
        "veil-safety",
        "Veil / Safety",
        "Toxicity of model outputs: rate, distribution, labels, identity-group disparity, worst responses.",
        rows,
        TOXICITY_THRESHOLD,
    )


def privacy() -> dict:
    where = PII.where()
    leaked = f"{where}\n  AND SdkMissed = 1"
    rows = [
        [
            stat("PII findings", f"SELECT sum(Count) AS findings FROM pii_findings WHERE {where}", width=6),
            stat(
                "Leaks caught by the server",
                f"SELECT sum(Count) AS leaks FROM pii_findings WHERE {leaked}",
                width=6,
                description="Entities the collector found in spans the SDK should have scrubbed.",
            ),
            stat(
                "Spans with PII",
                f"SELECT uniqExact(SpanId) AS spans FROM pii_findings WHERE {where}",
                width=6,
            ),
            stat(
                "Services leaking",
                f"SELECT uniqExact(ServiceName) AS services FROM pii_findings WHERE {leaked}",
                width=6,
            ),
        ],
        [
            timeseries(
                "PII findings by entity type",
                f"""
                SELECT {BUCKET}, EntityType AS entity_type, sum(Count) AS findings
                FROM pii_findings
                WHERE {where}
                GROUP BY time, entity_type ORDER BY time
                """,
            ),
            timeseries(
                "Leaks the SDK missed, by entity type",
                f"""
                SELECT {BUCKET}, EntityType AS entity_type, sum(Count) AS leaks
                FROM pii_findings
                WHERE {leaked}
                GROUP BY time, entity_type ORDER BY time
                """,
            ),
        ],
        [
            table(
                "Findings by entity type and source",
                f"""
                SELECT EntityType AS entity_type, sumIf(Count, Source = 'sdk') AS found_by_sdk,
                  sumIf(Count, Source = 'server') AS found_by_server,
                  sumIf(Count, SdkMissed = 1) AS missed_by_sdk, uniqExact(SpanId) AS spans
                FROM pii_findings
                WHERE {where}
                GROUP BY entity_type ORDER BY missed_by_sdk DESC, entity_type
                """,
            ),
            table(
                "Leaks by service",
                f"""
                SELECT ServiceName AS service, sum(Count) AS leaks, uniqExact(TraceId) AS traces,
                  max(SdkScrubbed) AS sdk_scrubbing, groupUniqArray(EntityType) AS entity_types
                FROM pii_findings
                WHERE {leaked}
                GROUP BY service ORDER BY leaks DESC
                """,
                description="sdk_scrubbing is 1 when the sender claimed to scrub: its leaks are SDK misses.",
            ),
        ],
        [
            table(
                "Recent leaks",
                f"""
                SELECT Timestamp AS time, TraceId AS trace_id, ServiceName AS service,
                  EntityType AS entity_type, Count AS count, Detector AS detector, Location AS location
                FROM pii_findings
                WHERE {leaked}
                ORDER BY Timestamp DESC LIMIT 100
                """,
                trace_column="trace_id",
                width=24,
            ),
        ],
    ]
    return dashboard(
        "veil-privacy",
        "Veil / Privacy",
        "PII found in traces by entity type (counts, never values), and the leaks the server caught.",
        rows,
    )


def guardrails() -> dict:
    where = TYPED.where()
    rows = [
        [
            stat(
                title,
                f"SELECT countIf(Decision = '{decision}') AS {alias} FROM guard_decisions WHERE {where}",
                width=6,
            )
            for title, decision, alias in (
                ("Blocks", "block", "blocks"),
                ("Redactions", "redact", "redactions"),
                ("Flags", "flag", "flags"),
                ("Passes", "pass", "passes"),
            )
        ],
        [
            timeseries(
                "Decisions over time",
                f"""
                SELECT {BUCKET}, Decision AS decision, count() AS decisions
                FROM guard_decisions
                WHERE {where} AND Decision != 'pass'
                GROUP BY time, decision ORDER BY time
                """,
            ),
            timeseries(
                "Blocks by check",
                f"""
                SELECT {BUCKET}, Check AS check_name, count() AS blocks
                FROM guard_decisions
                WHERE {where} AND Decision = 'block'
                GROUP BY time, check_name ORDER BY time
                """,
            ),
        ],
        [
            table(
                "Decisions by check",
                f"""
                SELECT Check AS check_name, countIf(Decision = 'block') AS blocks,
                  countIf(Decision = 'redact') AS redactions, countIf(Decision = 'flag') AS flags,
                  countIf(Decision = 'pass') AS passes, count() AS checks,
                  countIf(Decision != 'pass') / count() AS intervention_rate
                FROM guard_decisions
                WHERE {where}
                GROUP BY check_name ORDER BY blocks DESC, check_name
                """,
                units={"intervention_rate": "percentunit"},
            ),
            table(
                "Recent blocks",
                f"""
                SELECT Timestamp AS time, TraceId AS trace_id, ServiceName AS service,
                  Check AS check_name, Target AS target, Score AS score, Source AS source
                FROM guard_decisions
                WHERE {where} AND Decision = 'block'
                ORDER BY Timestamp DESC LIMIT 100
                """,
                trace_column="trace_id",
            ),
        ],
    ]
    return dashboard(
        "veil-guardrails",
        "Veil / Guardrails",
        "Guardrail decisions (block, redact, flag) by check, from the SDK and from POST /v1/guard.",
        rows,
    )


def alerts() -> dict:
    where = ALERTS.where()
    deliveries = DELIVERIES.where()
    latest = f"""
        SELECT Fingerprint, argMax(Status, Timestamp) AS status FROM alerts
        WHERE {where}
        GROUP BY Fingerprint
    """
    rows = [
        [
            stat(
                "Firing",
                f"SELECT countIf(status = 'firing') AS firing FROM ({latest})",
                width=6,
                description="Alerts (a rule and label set) whose latest change in the time range is firing.",
            ),
            stat(
                "Resolved",
                f"SELECT countIf(status = 'resolved') AS resolved FROM ({latest})",
                width=6,
                description="Alerts whose latest state change in the time range is resolved.",
            ),
            stat(
                "Deliveries",
                f"SELECT countIf(Outcome = 'delivered') AS delivered FROM deliveries WHERE {deliveries}",
                width=6,
            ),
            stat(
                "Failed deliveries",
                f"SELECT countIf(Outcome IN ('failed', 'dead', 'disabled')) AS failed "
                f"FROM deliveries WHERE {deliveries}",
                width=6,
                description="Attempts that will not be retried: 4xx answers, exhausted retries, 410 Gone.",
            ),
        ],
        [
            timeseries(
                "Alert state changes",
                f"""
                SELECT {BUCKET}, Status AS status, count() AS alerts
                FROM alerts
                WHERE {where}
                GROUP BY time, status ORDER BY time
                """,
            ),
            timeseries(
                "Delivery attempts by outcome",
                f"""
                SELECT {BUCKET}, Outcome AS outcome, count() AS attempts
                FROM deliveries
                WHERE {deliveries}
                GROUP BY time, outcome ORDER BY time
                """,
            ),
        ],
        [
            table(
                "Alerts",
                f"""
                SELECT Fingerprint AS fingerprint, any(RuleName) AS rule, argMax(Status, Timestamp) AS status,
                  any(Severity) AS severity, max(StartsAt) AS started, argMax(EndsAt, Timestamp) AS ended,
                  argMax(Value, Timestamp) AS value, any(Annotations['summary']) AS summary
                FROM alerts
                WHERE {where}
                GROUP BY fingerprint ORDER BY status = 'firing' DESC, started DESC
                """,
                width=24,
            ),
        ],
        [
            table(
                "Deliveries by destination",
                f"""
                SELECT Destination AS destination, any(DestinationType) AS type, count() AS attempts,
                  countIf(Outcome = 'delivered') AS delivered, countIf(Outcome = 'retry') AS retries,
                  countIf(Outcome IN ('failed', 'dead', 'disabled')) AS failed,
                  quantile(0.95)(LatencyMs) AS p95_latency_ms,
                  argMaxIf(Error, Timestamp, Error != '') AS last_error
                FROM deliveries
                WHERE {deliveries}
                GROUP BY destination ORDER BY failed DESC, destination
                """,
                units={"p95_latency_ms": "ms"},
            ),
            table(
                "Recent delivery failures",
                f"""
                SELECT Timestamp AS time, Destination AS destination, RuleId AS rule_id, Attempt AS attempt,
                  Outcome AS outcome, HttpStatus AS http_status, Error AS error
                FROM deliveries
                WHERE {deliveries} AND Outcome != 'delivered'
                ORDER BY Timestamp DESC LIMIT 100
                """,
            ),
        ],
    ]
    return dashboard(
        "veil-alerts",
        "Veil / Alerts",
        "Alert rule state changes (firing, resolved) and webhook, Slack and PagerDuty deliveries.",
        rows,
    )


def traces() -> dict:
    search = (
        "(TraceId = ${search:singlequote} OR positionCaseInsensitive(SpanName, ${search:singlequote}) > 0"
        " OR SpanAttributes['user.id'] = ${search:singlequote}"
        " OR SpanAttributes['session.id'] = ${search:singlequote})"
    )
    matching = f"{SPANS.where()}\n  AND {_conditional('search', search)}"
    trace_id = "${trace_id:singlequote}"
    rows = [
        [
            timeseries(
                "Spans by service",
                f"""
                SELECT {BUCKET}, ServiceName AS service, count() AS spans
                FROM otel_traces
                WHERE {SPANS.where()}
                GROUP BY time, service ORDER BY time
                """,
                width=24,
            ),
        ],
        [
            table(
                "Traces",
                f"""
                SELECT TraceId AS trace_id, min(Timestamp) AS start, argMin(SpanName, Timestamp) AS root_span,
                  argMin(ServiceName, Timestamp) AS service,
                  (max(toUnixTimestamp64Nano(Timestamp) + Duration) - min(toUnixTimestamp64Nano(Timestamp)))
                    / 1e6 AS duration_ms,
                  count() AS spans, countIf(StatusCode = 'Error') AS errors,
                  anyIf(SpanAttributes['gen_ai.request.model'],
                    mapContains(SpanAttributes, 'gen_ai.request.model')) AS model,
                  anyIf(SpanAttributes['user.id'], mapContains(SpanAttributes, 'user.id')) AS user,
                  anyIf(SpanAttributes['session.id'], mapContains(SpanAttributes, 'session.id')) AS session
                FROM otel_traces
                WHERE {PROJECT} AND {TIME}
                  AND TraceId IN (
                    SELECT TraceId FROM otel_traces
                    WHERE {matching}
                  )
                GROUP BY trace_id ORDER BY start DESC LIMIT 200
                """,
                units={"duration_ms": "ms"},
                trace_column="trace_id",
                width=24,
                height=10,
                description=(
                    "Traces with a span matching the filters; Search matches a trace id, a span name, "
                    "a user id or a session id. Click a trace id to open it below."
                ),
            ),
        ],
        [
            Panel(
                "traces",
                "Trace ${trace_id}",
                sql(
                    f"""
                    WITH
                      {trace_id} AS trace_id,
                      (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId = trace_id AND {PROJECT})
                        AS trace_start,
                      (SELECT max(End) + 1 FROM otel_traces_trace_id_ts
                        WHERE TraceId = trace_id AND {PROJECT}) AS trace_end
                    SELECT TraceId AS traceID, SpanId AS spanID, ParentSpanId AS parentSpanID,
                      ServiceName AS serviceName, SpanName AS operationName,
                      multiply(toUnixTimestamp64Nano(Timestamp), 0.000001) AS startTime,
                      multiply(Duration, 0.000001) AS duration,
                      arrayMap(key -> map('key', key, 'value', SpanAttributes[key]),
                        mapKeys(SpanAttributes)) AS tags,
                      arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]),
                        mapKeys(ResourceAttributes)) AS serviceTags
                    FROM otel_traces
                    WHERE {PROJECT} AND TraceId = trace_id
                      AND Timestamp >= trace_start AND Timestamp <= trace_end
                    """
                ),
                TRACES,
                24,
                14,
                "The trace chosen in the Trace id box, in Grafana's trace view (the plugin's two-step lookup "
                "through otel_traces_trace_id_ts).",
            ),
        ],
    ]
    return dashboard(
        "veil-traces",
        "Veil / Traces",
        "Search traces by service, model, environment, id, span name, user or session; "
        "open one in the trace view.",
        rows,
        _textbox("search", "Search"),
        _textbox("trace_id", "Trace id"),
    )


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings (the dashboard JSON) as YAML literal blocks, readable in a diff."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_LiteralDumper.add_representer(str, _represent_str)


DASHBOARDS = {
    "overview": overview,
    "safety": safety,
    "privacy": privacy,
    "guardrails": guardrails,
    "alerts": alerts,
    "traces": traces,
}


def _configmap(name: str, labels: dict[str, str], data: dict[str, str], **annotations: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "veil",
        "labels": {"app.kubernetes.io/part-of": "veil"},
    }
    metadata["labels"].update(labels)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _manifest(*documents: dict[str, Any]) -> str:
    header = "# Generated by dashboards/build.py from dashboards/; do not edit by hand.\n"
    body = "---\n".join(yaml.dump(d, Dumper=_LiteralDumper, sort_keys=False, width=120) for d in documents)
    return header + body


def build() -> dict[str, str]:
    """Every generated file's path (relative to the repository root) and its exact content."""
    files: dict[str, str] = {}
    for name, make in DASHBOARDS.items():
        files[f"dashboards/json/{name}.json"] = json.dumps(make(), indent=2, ensure_ascii=False) + "\n"
    dashboards = {path.rsplit("/", 1)[1]: text for path, text in files.items()}
    # The Grafana Helm chart's sidecars load ConfigMaps labelled grafana_dashboard / grafana_datasource;
    # a plain Grafana Deployment mounts them at the paths the provisioning files name.
    files["deploy/kubernetes/grafana/dashboards.yaml"] = _manifest(
        _configmap("veil-grafana-dashboards", {"grafana_dashboard": "1"}, dashboards, grafana_folder="Veil")
    )
    provisioning = ROOT / "provisioning"
    datasource = (provisioning / "datasources" / "veil.yaml").read_text(encoding="utf-8")
    provider = (provisioning / "dashboards" / "veil.yaml").read_text(encoding="utf-8")
    files["deploy/kubernetes/grafana/provisioning.yaml"] = _manifest(
        _configmap("veil-grafana-datasource", {"grafana_datasource": "1"}, {"veil.yaml": datasource}),
        _configmap("veil-grafana-dashboard-provider", {}, {"veil.yaml": provider}),
    )
    return files


def main() -> int:
    for relative, text in build().items():
        path = ROOT.parent / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {relative}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
