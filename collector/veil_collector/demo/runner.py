"""``veil demo``: a collector on embedded ClickHouse, the demo app sending to it, and a summary.

The collector runs as a subprocess (``python -m veil_collector collector --no-auth``) so that it owns its
embedded ClickHouse folder the way a real deployment does; this process runs the demo app through the
SDK, waits until every span the SDK exported is queryable, and reads the summary back through the
collector's query API, like any client would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

SERVICE_NAME = "veil-demo"
_POLL_INTERVAL_S = 0.25
_SCORES_STABLE_S = 2.0
_SCORING_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 20.0
_LOG_TAIL_LINES = 25


class DemoError(RuntimeError):
    """The demo could not complete; the message says which step failed and why."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CollectorProcess:
    """``veil collector --no-auth`` on embedded ClickHouse in ``data_dir``, as a child process.

    Its output goes to ``data_dir/collector.log``; failures quote the log's last lines.
    """

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = data_dir / "collector.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "veil_collector", "collector",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--dsn", f"chdb://{self.data_dir / 'clickhouse'}",
            "--spool-dir", str(self.data_dir / "spool"),
            "--no-auth",
        ]  # fmt: skip
        # Everything the collector keeps (alert database, PII placeholder key) goes to the demo's folder,
        # not to .veil/ in whatever folder the user ran the demo from.
        env = {**os.environ, "VEIL_DATA_DIR": str(self.data_dir)}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    def wait_ready(self, timeout_s: float) -> None:
        """Return once ``/readyz`` answers 200.

        Raises:
            DemoError: the process exited, or it was not ready within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.exit_code is not None:
                    raise DemoError(f"the collector exited with status {self.exit_code}.\n{self.log_tail()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(_POLL_INTERVAL_S)
        raise DemoError(f"the collector was not ready within {timeout_s:.0f} s.\n{self.log_tail()}")

    @property
    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def wait(self) -> None:
        """Block until the collector exits (the user pressed Ctrl-C, which reaches both processes)."""
        if self._process is not None:
            self._process.wait()

    def stop(self) -> None:
        """Stop gracefully (SIGINT, as Ctrl-C would: the spool is committed); kill after a timeout."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no collector log)"
        return "Collector log (last lines):\n" + "\n".join(lines[-_LOG_TAIL_LINES:])


@contextmanager
def _data_folder(data_dir: Path | None) -> Iterator[Path]:
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        yield data_dir
        return
    folder = Path(tempfile.mkdtemp(prefix="veil-demo-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_demo(
    *,
    console: Console,
    port: int | None = None,
    data_dir: Path | None = None,
    serve: bool = False,
    rounds: int = 3,
    timeout_s: float = 180.0,
) -> dict[str, Any]:
    """Run the whole demo and print its summary; returns the ``/api/stats`` body it summarized.

    Raises:
        DemoError: a step failed (the collector did not start, spans were rejected or never arrived).
    """
    started = datetime.now(timezone.utc) - timedelta(seconds=5)
    with _data_folder(data_dir) as folder:
        collector = CollectorProcess(folder, port or free_port())
        try:
            with console.status(
                "Starting the collector on embedded ClickHouse (first start loads models)..."
            ):
                collector.start()
                collector.wait_ready(timeout_s)
            console.print(f"[green]✓[/] Collector ready at [bold]{collector.base_url}[/] (data in {folder})")

            with console.status(f"Running the demo app ({rounds} rounds of its scenarios)..."):
                report, exported = _run_app(collector.base_url, rounds)
            console.print(
                f"[green]✓[/] Demo app ran {report.traces} traces ({', '.join(report.scenarios)}); "
                f"the SDK exported {exported} spans"
            )

            with httpx.Client(base_url=collector.base_url, timeout=10.0) as client:
                with console.status("Waiting until every span is queryable..."):
                    _wait_queryable(client, started, exported, report.llm_calls, timeout_s, collector)
                with console.status("Waiting for the classifiers to score the texts..."):
                    stats = _wait_scored(client, started)
                traces = _get(client, "/api/traces", {"start": started.isoformat(), "limit": 10})["traces"]
            console.print("[green]✓[/] All spans stored and queryable\n")
            console.print(_summary(stats, traces))
            console.print(_next_steps(collector.base_url, traces, serving=serve))
            if serve:
                console.print(f"\nCollector running at [bold]{collector.base_url}[/]; press Ctrl-C to stop.")
                try:
                    collector.wait()
                except KeyboardInterrupt:
                    console.print("Stopping the collector...")
            return stats
        finally:
            collector.stop()


def _run_app(base_url: str, rounds: int) -> tuple[Any, int]:
    """Run the demo app through the SDK; returns its report and how many spans the collector accepted."""
    import veil
    from veil_collector.demo.app import run_workload

    veil.init(endpoint=f"{base_url}/v1/traces", service_name=SERVICE_NAME, environment="demo")
    try:
        report = run_workload(rounds)
        veil.flush()
        sdk = veil.stats()
    finally:
        veil.shutdown()
    if sdk["failed"] or sdk["dropped"]:
        raise DemoError(
            f"the SDK could not deliver every span: {sdk['failed']} failed, {sdk['dropped']} dropped "
            f"(internal errors: {sdk['internal_errors'] or 'none'})"
        )
    return report, sdk["exported"]


def _get(client: httpx.Client, path: str, params: dict[str, Any]) -> dict[str, Any]:
    response = client.get(path, params=params)
    if response.status_code != 200:
        raise DemoError(f"GET {path} answered {response.status_code}: {response.text[:500]}")
    return response.json()


def _wait_queryable(
    client: httpx.Client,
    started: datetime,
    spans: int,
    llm_calls: int,
    timeout_s: float,
    collector: CollectorProcess,
) -> dict[str, Any]:
    """Poll ``/api/stats`` until all exported spans and model calls are stored; returns the last body."""
    deadline = time.monotonic() + timeout_s
    params = {"start": started.isoformat()}
    while True:
        stats = _get(client, "/api/stats", params)
        if stats["spans"] >= spans and stats["llm_calls"] >= llm_calls:
            return stats
        if collector.exit_code is not None:
            raise DemoError(
                f"the collector exited with status {collector.exit_code}.\n{collector.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise DemoError(
                f"only {stats['spans']} of {spans} spans ({stats['llm_calls']} of {llm_calls} model calls) "
                f"were queryable after {timeout_s:.0f} s.\n{collector.log_tail()}"
            )
        time.sleep(_POLL_INTERVAL_S)


def _wait_scored(client: httpx.Client, started: datetime) -> dict[str, Any]:
    """Poll ``/api/stats`` until the classifier scores stop growing; returns the last body.

    Classifiers score stored calls asynchronously, and how many scores a call gets depends on the models
    loaded, so there is no count to wait for: the scores are complete once they stop changing.
    """
    deadline = time.monotonic() + _SCORING_TIMEOUT_S
    params = {"start": started.isoformat()}
    stats = _get(client, "/api/stats", params)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL_S)
        latest = _get(client, "/api/stats", params)
        if latest["evaluations"] != stats["evaluations"]:
            stable_since = time.monotonic()
        elif time.monotonic() - stable_since >= _SCORES_STABLE_S:
            return latest
        stats = latest
    return stats


def _usd(value: float | None) -> str:
    return "no price" if value is None else f"${value:.6f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _summary(stats: dict[str, Any], traces: list[dict[str, Any]]) -> Panel:
    latency = stats["latency_ms"]
    overview = Table.grid(padding=(0, 2))
    overview.add_column(style="bold", no_wrap=True)
    overview.add_column()
    overview.add_row("Traces", str(stats["traces"]))
    overview.add_row("Spans", f"{stats['spans']} ({stats['error_spans']} with errors)")
    overview.add_row("Model calls", f"{stats['llm_calls']} ({stats['llm_errors']} failed)")
    overview.add_row("Tokens", f"{stats['input_tokens']} in, {stats['output_tokens']} out")
    unpriced = stats["unpriced_calls"]
    plural = "" if unpriced == 1 else "s"
    overview.add_row("Cost", f"{_usd(stats['cost_usd'])} ({unpriced} call{plural} without a price)")
    overview.add_row(
        "Call latency",
        f"p50 {_ms(latency['p50'])} ms, p95 {_ms(latency['p95'])} ms, p99 {_ms(latency['p99'])} ms",
    )
    pii = ", ".join(f"{p['entity_type']} x{p['count']} ({p['source']})" for p in stats["pii_findings"])
    overview.add_row("PII findings", f"{stats['pii_findings_total']}" + (f": {pii}" if pii else ""))
    scores = ", ".join(
        f"{e['name']}/{e['label']}: {e['flagged']} of {e['scored']} texts flagged (max {e['max_score']:.2f})"
        for e in stats["evaluations"]
    )
    overview.add_row("Classifiers", scores or "no scores (classifiers off)")

    by_model = Table(
        title="Calls by model (latency in ms)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )
    by_model.add_column("Model (provider)", no_wrap=True, overflow="ellipsis", max_width=30)
    for column in ("Calls", "Err", "Tokens", "Cost", "p50", "p95"):
        by_model.add_column(column, justify="right", no_wrap=True)
    for row in stats["by_model"]:
        by_model.add_row(
            f"{row['model'] or '(none)'} ({row['provider'] or '?'})",
            str(row["calls"]),
            str(row["errors"]),
            f"{row['input_tokens']}/{row['output_tokens']}",
            _usd(row["cost_usd"]),
            _ms(row["latency_ms"]["p50"]),
            _ms(row["latency_ms"]["p95"]),
        )

    recent = Table(
        title="Latest traces",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )
    recent.add_column("Trace", no_wrap=True)
    recent.add_column("Root span", no_wrap=True, overflow="ellipsis", max_width=32)
    for column in ("Spans", "ms", "Status", "Cost"):
        recent.add_column(column, justify="right", no_wrap=True)
    for trace in traces:
        recent.add_row(
            trace["trace_id"][:8],
            trace["root_span_name"],
            str(trace["span_count"]),
            _ms(trace["duration_ms"]),
            "[red]error[/]" if trace["status"] == "error" else "[green]ok[/]",
            _usd(trace["cost_usd"]) if trace["models"] else "-",
        )
    body = Group(overview, "", by_model, "", recent)
    return Panel(body, title="What the collector saw", border_style="cyan")


def _next_steps(base_url: str, traces: list[dict[str, Any]], *, serving: bool) -> Panel:
    example = f"{base_url}/api/traces/{traces[0]['trace_id']}" if traces else f"{base_url}/api/traces"
    urls = Table.grid(padding=(0, 2))
    urls.add_column(style="bold", no_wrap=True)
    urls.add_column(overflow="fold")
    urls.add_row("API docs", f"{base_url}/docs")
    urls.add_row("Traces", f"{base_url}/api/traces")
    urls.add_row("One trace", example)
    urls.add_row("Stats", f"{base_url}/api/stats")
    urls.add_row("Metrics", f"{base_url}/metrics")
    parts: list[Any] = [urls]
    if not serving:
        parts.append(
            "[dim]This demo's collector has stopped; [bold]veil demo --serve[/] keeps it running.[/]"
        )
    parts += [
        "",
        "[bold]Your own app:[/] run [bold]veil collector[/], get a key with "
        "[bold]veil projects create my-app[/], then "
        '[bold]veil.init(endpoint="http://127.0.0.1:4318", api_key=KEY, service_name="my-app")[/] '
        'and decorate your model calls with [bold]@veil.observe(kind="llm")[/].',
        "",
        "[bold]Grafana:[/] the dashboards read a ClickHouse server (embedded ClickHouse is private to the "
        "collector process). Start the collector with "
        "[bold]VEIL_CLICKHOUSE_DSN=http://user:pass@host:8123[/], then "
        "[bold]veil grafana push --url http://localhost:3000 --token TOKEN[/] installs the datasource and "
        "dashboards (or provision them from [bold]dashboards/[/]; the README shows how).",
    ]
    return Panel(Group(*parts), title="Where to look next", border_style="green")
