"""Alert latency: from a hostile LLM output emitted through the SDK to the signed webhook at a receiver.

The full path, in one process: ``@veil.observe(kind="llm")`` → SDK export (OTLP/HTTP) → the collector app
from ``veil_collector.app.create_app`` under uvicorn (spool → drain into embedded ClickHouse) → classifier
stage (toxicity) → alert engine (event rule ``toxicity >= threshold``) → outbox → relay → a local HTTP
receiver. Each event uses its own model name and the rule groups by model, so every event is its own alert
(no deduplication between them). Latency = receiver arrival time - the moment the decorated call returned.

Prints a table and writes it to ``bench/results/alert_latency.md``. Settings are the collector's defaults
(SDK export every 1 s, drain every 0.5 s, NER on) except auth (off) and the folders (a temp folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: the classifier falls back when it must

import uvicorn

import veil
from veil_collector.app import create_app
from veil_collector.config import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "alert_latency.md"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOSTILE = "You are a stupid worthless idiot and I hate you, shut up you moron."
TARGET_P95_S = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Arrivals:
    """Arrival time of the first webhook per model label (repeats of a webhook-id are ignored)."""

    def __init__(self) -> None:
        self.by_model: dict[str, float] = {}
        self.lock = threading.Lock()
        self.received = threading.Condition(self.lock)

    def record(self, body: bytes) -> None:
        now = time.monotonic()
        payload = json.loads(body)
        model = payload["alerts"][0]["labels"].get("model", "")
        with self.received:
            self.by_model.setdefault(model, now)
            self.received.notify_all()


def start_receiver(arrivals: Arrivals) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            arrivals.record(body)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


def rules_yaml(url: str, threshold: float) -> str:
    return (
        "rules:\n  - id: toxic-output\n    name: Toxic output\n    severity: critical\n"
        f"    event: {{type: toxicity, threshold: {threshold}, group_by: [model]}}\n"
        f'    destinations: [{{name: bench, type: webhook, url: "{url}", secret: "{SECRET}"}}]\n'
    )


@veil.observe(kind="llm")
def chat(*, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """A stand-in LLM call whose completion is hostile."""
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": HOSTILE}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
    }


def stage_percentiles(store: Any, emitted_wall: dict[str, float]) -> list[tuple[str, str]]:
    """p50 and p95 of each hop, from the wall-clock times the stages stored in ClickHouse."""
    scored = dict(
        store.query(
            "SELECT RequestModel, toFloat64(max(EvaluatedAt)) FROM evaluations "
            "WHERE Evaluator = 'toxicity' GROUP BY RequestModel"
        ).result_rows
    )
    fired = dict(
        store.query(
            "SELECT Labels['model'], toFloat64(min(Timestamp)) FROM alerts WHERE Status = 'firing' GROUP BY 1"
        ).result_rows
    )
    sent = dict(
        store.query(
            "SELECT a.Labels['model'], toFloat64(min(d.Timestamp)) FROM deliveries AS d "
            "INNER JOIN alerts AS a ON a.NotificationId = d.NotificationId "
            "WHERE d.Outcome = 'delivered' GROUP BY 1"
        ).result_rows
    )
    hops = [
        ("SDK call -> scored (evaluations.EvaluatedAt)", emitted_wall, scored),
        ("scored -> alert fired (alerts.Timestamp)", scored, fired),
        ("fired -> delivered (deliveries.Timestamp)", fired, sent),
    ]
    rows = []
    for name, start, end in hops:
        spans = [end[m] - start[m] for m in start if m in end]
        value = f"{statistics.median(spans):.2f} s / {percentile(spans, 0.95):.2f} s" if spans else "n/a"
        rows.append((f"p50 / p95 {name}", value))
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between hostile outputs")
    parser.add_argument("--threshold", type=float, default=0.5, help="the rule's toxicity threshold")
    parser.add_argument("--warmup", type=int, default=5, help="events sent and awaited before measuring")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the last webhook")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="veil-alert-bench-"))
    arrivals = Arrivals()
    receiver, url = start_receiver(arrivals)
    rules_file = folder / "rules.yaml"
    rules_file.write_text(rules_yaml(url, args.threshold))
    port = free_port()
    settings = Settings(data_dir=folder / "data", no_auth=True, alert_rules_file=rules_file, port=port)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    server_thread = threading.Thread(target=server.run, daemon=True)
    server_thread.start()
    while not server.started:
        time.sleep(0.05)
    if app.state.alert_engine is None or app.state.classifier is None:
        sys.exit("the collector app runs without its classifier stage or alert engine: nothing to measure")

    veil.init(endpoint=f"http://127.0.0.1:{port}", service_name="alert-bench", environment="bench")
    # Warm-up: the first batches load the NER model and open ClickHouse parts; not part of the measure.
    warmup = [f"warmup-{i}" for i in range(args.warmup)]
    for model in warmup:
        chat(model=model, messages=[{"role": "user", "content": "Say something about me."}])
    with arrivals.received:
        arrivals.received.wait_for(lambda: set(warmup) <= arrivals.by_model.keys(), timeout=args.timeout)
    emitted: dict[str, float] = {}
    emitted_wall: dict[str, float] = {}
    for i in range(args.events):
        model = f"bench-model-{i}"
        chat(model=model, messages=[{"role": "user", "content": "Say something about me."}])
        emitted[model] = time.monotonic()
        emitted_wall[model] = time.time()
        time.sleep(args.interval)

    deadline = time.monotonic() + args.timeout
    with arrivals.received:
        while len(arrivals.by_model.keys() & emitted.keys()) < len(emitted) and time.monotonic() < deadline:
            arrivals.received.wait(0.5)
        latencies = [arrivals.by_model[m] - t for m, t in emitted.items() if m in arrivals.by_model]

    stages = stage_percentiles(app.state.store, emitted_wall)
    toxicity = app.state.classifier.toxicity
    model_name = f"{toxicity.name} {toxicity.version}"
    veil.shutdown()
    server.should_exit = True
    server_thread.join(10)
    receiver.shutdown()

    delivered = len(latencies)
    met = bool(latencies) and delivered == args.events and percentile(latencies, 0.95) <= TARGET_P95_S
    rows = [
        ("events emitted", f"{args.events}"),
        ("webhooks received", f"{delivered}"),
        ("p50 latency", f"{statistics.median(latencies):.2f} s" if latencies else "n/a"),
        ("p95 latency", f"{percentile(latencies, 0.95):.2f} s" if latencies else "n/a"),
        ("max latency", f"{max(latencies):.2f} s" if latencies else "n/a"),
        *stages,
        ("target p95", f"<= {TARGET_P95_S:.0f} s"),
        ("met", "yes" if met else "no"),
    ]
    table = "\n".join(["| measure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)])
    header = (
        "# Alert latency: hostile output through the SDK -> signed webhook at a local receiver\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}. {args.warmup} warm-up events, then events every "
        f"{args.interval} s; one alert per event; "
        "collector defaults (SDK export 1 s, drain 0.5 s, NER on); toxicity model: "
        f"{model_name} (the offline fallback when detoxify weights are absent).\n\n"
    )
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(header + table + "\n")
    sys.exit(0 if delivered == args.events else 1)


if __name__ == "__main__":
    main()
