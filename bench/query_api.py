"""Query benchmark: the read queries behind /api/traces, /api/traces/{id} and /api/stats.

Seeds an embedded ClickHouse (a temporary folder of this process) with GenAI traces shaped like the SDK's
(an agent span, a tool span and chat spans with about 1 KB of content each, plus their llm_calls rows),
in two projects, then times each query of ``veil_collector.store.queries`` (median of several runs,
typed results included) against a bare clickhouse-connect query that scans the same rows of the same
project and window (``SELECT TraceId, count() ... GROUP BY TraceId``). Ratios compare within this run.

Prints a table and writes it to ``bench/results/query_api.md``. ``--quick`` seeds fewer traces.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from veil_collector.store import Store
from veil_collector.store.migrate import migrate
from veil_collector.store.queries import TraceFilter, get_stats, get_trace, list_traces

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "collector" / "query"))

from query_rows import CALL_COLUMNS, SPAN_COLUMNS, call_row, span_row  # noqa: E402

RUNS = 11
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5-haiku", "mistral-small")
CONTENT = "x" * 1000


def seed(store: Store, traces: int, now: datetime) -> str:
    """Insert ``traces`` traces per project over the last hour; returns one trace id of project p1."""
    spans: list[tuple[Any, ...]] = []
    calls: list[tuple[Any, ...]] = []
    for index, project in enumerate(("p1", "p2"), start=1):
        for n in range(traces):
            trace = f"{index:02x}{n:030x}"
            at = now - timedelta(seconds=3600 * n / traces)
            model = MODELS[n % len(MODELS)]
            attributes = {"user.id": f"user-{n % 97}", "session.id": f"s-{n % 501}"}
            root = f"{n:014x}00"
            spans.append(span_row(trace=trace, span=root, name="invoke_agent support", at=at,
                                  duration_ms=300, attributes=attributes, project=project))  # fmt: skip
            spans.append(span_row(trace=trace, span=f"{n:014x}01", parent=root, name="execute_tool lookup",
                                  at=at, duration_ms=5, project=project))  # fmt: skip
            for i in range(2):
                span = f"{n:014x}0{i + 2}"
                chat_attributes = {
                    **attributes,
                    "gen_ai.request.model": model,
                    "gen_ai.input.messages": CONTENT,
                    "gen_ai.output.messages": CONTENT,
                }
                status = "Error" if n % 50 == 0 else "Unset"
                spans.append(span_row(trace=trace, span=span, parent=root, name=f"chat {model}", at=at,
                                      duration_ms=100 + n % 50, attributes=chat_attributes, status=status,
                                      project=project))  # fmt: skip
                calls.append(call_row(trace=trace, span=span, model=model, at=at, duration_ms=100 + n % 50,
                                      project=project))  # fmt: skip
            if len(spans) >= 50_000:
                store.insert("otel_traces", spans, SPAN_COLUMNS)
                store.insert("llm_calls", calls, CALL_COLUMNS)
                spans, calls = [], []
    store.insert("otel_traces", spans, SPAN_COLUMNS)
    store.insert("llm_calls", calls, CALL_COLUMNS)
    return f"{1:02x}{traces // 2:030x}"


def timed_ms(action: Callable[[], Any]) -> tuple[float, float]:
    """(median, best) of ``RUNS`` runs after one warm-up; on a shared machine the best is the steadier."""
    action()  # warm caches, as a dashboard's second request would find them
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="seed 2,000 traces per project instead of 20,000"
    )
    args = parser.parse_args()
    per_project = 2_000 if args.quick else 20_000

    with tempfile.TemporaryDirectory(prefix="veil-bench-query-") as folder:
        store = Store(f"chdb://{folder}", database="bench")
        migrate(store)
        now = datetime.now(timezone.utc)
        started = time.perf_counter()
        one_trace = seed(store, per_project, now)
        seeded_s = time.perf_counter() - started
        window = {"start": now - timedelta(hours=2), "end": now + timedelta(minutes=1)}
        first_page = list_traces(store, project_id="p1", query=TraceFilter(**window))

        bare_sql = (
            "SELECT TraceId, count() FROM otel_traces WHERE ProjectId = {p:String} "
            "AND Timestamp >= fromUnixTimestamp64Nano({s:Int64}) GROUP BY TraceId "
            "ORDER BY TraceId DESC LIMIT 51"
        )
        bare_parameters = {"p": "p1", "s": int(window["start"].timestamp() * 1e9)}
        baseline = timed_ms(lambda: store.query(bare_sql, bare_parameters).result_rows)

        def traces(**filters: Any) -> Callable[[], Any]:
            return lambda: list_traces(store, project_id="p1", query=TraceFilter(**window, **filters))

        cases = [
            ("list_traces (50, 2 h window)", traces()),
            ("list_traces, model filter", traces(model="gpt-4o")),
            ("list_traces, user + errors", traces(user_id="user-0", status="error")),
            ("list_traces, page 2 (cursor)", traces(cursor=first_page.next_cursor)),
            ("get_trace (span tree)", lambda: get_trace(store, project_id="p1", trace_id=one_trace)),
            ("get_stats (by model, p50/95/99)", lambda: get_stats(store, project_id="p1", **window)),
        ]
        rows = [(name, timed_ms(action)) for name, action in cases]
        store.close()

    spans_total = per_project * 2 * 4
    lines = [
        "# Query API benchmark",
        "",
        f"Embedded ClickHouse, {per_project:,} traces per project x 2 projects ({spans_total:,} spans, "
        f"~2 KB content per chat span; seeded in {seeded_s:.1f} s). {RUNS} runs after one warm-up.",
        "Baseline: a bare clickhouse-connect `GROUP BY TraceId` over the same project and window.",
        "",
        "| query | median ms | best ms | best x baseline |",
        "|---|---:|---:|---:|",
        f"| baseline: bare GROUP BY TraceId | {baseline[0]:.1f} | {baseline[1]:.1f} | 1.00 |",
        *(f"| {name} | {med:.1f} | {best:.1f} | {best / baseline[1]:.2f} |" for name, (med, best) in rows),
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "query_api.md").write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
