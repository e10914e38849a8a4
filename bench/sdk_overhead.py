"""What one traced LLM call costs the application: Veil's `@observe` against hand-written OTel and Langfuse.

Each variant wraps the same fake LLM call (a 1.7 KB prompt holding an email, a phone number and a card
number; a dict response with usage) and exports to a local OTLP sink that accepts and discards (it
decodes the protobuf only to count the spans that arrived). Every variant runs in a fresh subprocess so
global tracer providers never mix; the sink runs in this parent process, so its CPU is not charged to the
variant.

Per variant:
- caller-side latency p50 / p99 at a steady rate (default 2,000 calls/s for 10 s): what the app feels;
- caller-side µs per call in a tight loop;
- total process CPU per call over the steady phase plus the final flush (export threads included);
- spans dropped = calls made - spans the sink received (steady phase; the tight loop's shown apart).

Variants: undecorated; hand-written OTel (`BatchSpanProcessor` + `OTLPSpanExporter`, gzip) setting the
same attributes; `@veil.observe(kind="llm")` without and with the default PII scrubber (the latter when
`veil.pii.otel` exists); Langfuse's `@observe(as_type="generation")` with `update_current_generation`
(model and usage, so it records the same facts), posting OTLP to the sink.

Usage: python bench/sdk_overhead.py [--quick] [--rate 2000] [--duration 10] [--loop 20000]
Writes bench/results/sdk_overhead.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "sdk_overhead.md"
VARIANTS = ("undecorated", "otel", "veil", "veil_pii", "langfuse")

PROMPT = (
    "You are a support assistant. Summarise the customer's message below and draft a polite reply. "
    "Customer: Hello, my name is Jane Doe and I am writing about order 88231. You can reach me at "
    "jane.doe@example.com or on +1 (415) 555-0132 during business hours. I paid with my card "
    "4111 1111 1111 1111 and was charged twice for the same order. "
) + (
    "The package arrived late and the box was damaged; two of the three items were missing and the "
    "tracking page still shows the parcel as in transit. I would like a refund for the missing items "
    "and for the duplicate charge, and I would appreciate an explanation of what went wrong. "
) * 5
assert 1600 <= len(PROMPT) <= 1900, len(PROMPT)

MODEL = "gpt-4o-mini"


def fake_response() -> dict[str, Any]:
    """What an OpenAI-style client returns, as a dict (a fresh object per call, like a real client)."""
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Summary: duplicate charge and missing items."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 412, "completion_tokens": 11, "total_tokens": 423},
    }


# --- variants (run inside the worker subprocess) ------------------------------------------------------------
def setup_undecorated(sink: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    def chat(messages: list[dict[str, str]], model: str = MODEL, temperature: float = 0.2) -> dict[str, Any]:
        return fake_response()

    return lambda: chat([{"role": "user", "content": PROMPT}]), lambda: None


def setup_otel(sink: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    exporter = OTLPSpanExporter(endpoint=f"{sink}/v1/traces", compression=Compression.Gzip)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192, schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("bench")

    def chat(messages: list[dict[str, str]], model: str = MODEL, temperature: float = 0.2) -> dict[str, Any]:
        with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", model)
            span.set_attribute("gen_ai.request.temperature", temperature)
            span.set_attribute("veil.kind", "llm")
            inputs = [
                {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in messages
            ]
            span.set_attribute("gen_ai.input.messages", json.dumps(inputs))
            response = fake_response()
            span.set_attribute("gen_ai.response.model", response["model"])
            span.set_attribute("gen_ai.response.id", response["id"])
            span.set_attribute("gen_ai.usage.input_tokens", response["usage"]["prompt_tokens"])
            span.set_attribute("gen_ai.usage.output_tokens", response["usage"]["completion_tokens"])
            reasons = [c["finish_reason"] for c in response["choices"]]
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
            span.set_attribute(
                "gen_ai.output.messages",
                json.dumps(
                    [
                        {
                            "role": c["message"]["role"],
                            "parts": [{"type": "text", "content": c["message"]["content"]}],
                            "finish_reason": c["finish_reason"],
                        }
                        for c in response["choices"]
                    ]
                ),
            )
            return response

    return lambda: chat([{"role": "user", "content": PROMPT}]), lambda: provider.force_flush()


def _setup_veil(sink: str, scrub_pii: bool) -> tuple[Callable[[], Any], Callable[[], None]]:
    import veil

    veil.init(endpoint=sink, service_name="bench", scrub_pii=scrub_pii)

    @veil.observe(kind="llm")
    def chat(messages: list[dict[str, str]], model: str = MODEL, temperature: float = 0.2) -> dict[str, Any]:
        return fake_response()

    def flush() -> None:
        veil.flush(60)

    return lambda: chat([{"role": "user", "content": PROMPT}]), flush


def setup_veil(sink: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    return _setup_veil(sink, scrub_pii=False)


def setup_veil_pii(sink: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    import veil.pii.otel  # noqa: F401 - raises ImportError when the PII engine is absent: variant skipped.

    return _setup_veil(sink, scrub_pii=True)


def setup_langfuse(sink: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    from langfuse import Langfuse, get_client, observe

    Langfuse(public_key="pk-lf-bench", secret_key="sk-lf-bench", base_url=sink, flush_interval=1.0)
    client = get_client()

    @observe(as_type="generation")
    def chat(messages: list[dict[str, str]], model: str = MODEL, temperature: float = 0.2) -> dict[str, Any]:
        response = fake_response()
        client.update_current_generation(
            model=response["model"],
            usage_details={
                "input": response["usage"]["prompt_tokens"],
                "output": response["usage"]["completion_tokens"],
            },
        )
        return response

    return lambda: chat([{"role": "user", "content": PROMPT}]), client.flush


SETUPS: dict[str, Callable[[str], tuple[Callable[[], Any], Callable[[], None]]]] = {
    "undecorated": setup_undecorated,
    "otel": setup_otel,
    "veil": setup_veil,
    "veil_pii": setup_veil_pii,
    "langfuse": setup_langfuse,
}


WARMUP = 500


def run_worker(
    variant: str, phase: str, sink: str, rate: float, duration: float, loop: int
) -> dict[str, Any]:
    """Runs one phase of one variant in this process and returns its measurements.

    Phase "loop": calls back to back, µs per call. Phase "steady": calls paced at `rate`, per-call latency
    and process CPU. The phases run in separate processes so that spans a tight loop drops (it outruns
    any exporter) are not charged to the steady phase.
    """
    call, flush = SETUPS[variant](sink)
    for _ in range(WARMUP):
        call()
    flush()
    clock = time.perf_counter_ns
    if phase == "loop":
        start = clock()
        for _ in range(loop):
            call()
        loop_us = (clock() - start) / loop / 1000
        flush()
        return {"calls": WARMUP + loop, "loop_us": loop_us}

    total = int(rate * duration)
    latencies = [0] * total
    interval_ns = int(1e9 / rate)
    cpu_start = time.process_time()
    begin = clock()
    for i in range(total):
        # Sleep-paced on absolute due times (no busy-wait, which would burn CPU and blur CPU/call).
        wait = begin + i * interval_ns - clock()
        if wait > 0:
            time.sleep(wait / 1e9)
        t0 = clock()
        call()
        latencies[i] = clock() - t0
    end = clock()
    flush()
    cpu = time.process_time() - cpu_start
    latencies.sort()
    return {
        "calls": WARMUP + total,
        "steady_rate": total / ((end - begin) / 1e9),
        "p50_us": latencies[total // 2] / 1000,
        "p99_us": latencies[int(total * 0.99)] / 1000,
        "mean_us": statistics.fmean(latencies) / 1000,
        "cpu_us_per_call": cpu / total * 1e6,
    }


# --- the sink and the parent --------------------------------------------------------------------------------
class Sink:
    """An OTLP/HTTP endpoint on 127.0.0.1 that accepts any path, counts spans and discards them."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        sink = self
        self.spans = 0
        self.lock = threading.Lock()
        response = ExportTraceServiceResponse().SerializeToString()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                with sink.lock:
                    sink.spans += count
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(response)))
                self.end_headers()
                self.wfile.write(response)

            def do_GET(self) -> None:
                # Langfuse may probe the API; answer with an empty JSON object.
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> int:
        with self.lock:
            count, self.spans = self.spans, 0
            return count


def run_phase(variant: str, phase: str, sink: Sink, args: argparse.Namespace) -> dict[str, Any] | None:
    """Runs one phase in a fresh subprocess; adds the spans the sink received and the drops."""
    sink.take()
    command = [sys.executable, __file__, "--worker", variant, "--phase", phase, "--sink", sink.url]
    command += ["--rate", str(args.rate), "--duration", str(args.duration), "--loop", str(args.loop)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "sdk"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    time.sleep(0.5)
    received = sink.take()
    if done.returncode != 0:
        if "ImportError" in done.stderr or "ModuleNotFoundError" in done.stderr:
            print(f"{variant}: skipped ({done.stderr.strip().splitlines()[-1]})")
            return None
        raise RuntimeError(f"{variant} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = result["calls"] if variant != "undecorated" else 0
    result["dropped"] = max(0, expected - received)
    return result


def run_variant(variant: str, sink: Sink, args: argparse.Namespace) -> dict[str, Any] | None:
    steady = run_phase(variant, "steady", sink, args)
    if steady is None:
        return None
    loop = run_phase(variant, "loop", sink, args)
    assert loop is not None
    return {
        "variant": variant,
        **steady,
        "loop_us": loop["loop_us"],
        "loop_dropped": loop["dropped"],
    }


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    by_name = {r["variant"]: r for r in results}
    otel = by_name.get("otel")
    langfuse = by_name.get("langfuse")
    lines = [
        "# SDK overhead: one traced LLM call (1.7 KB prompt, dict response with usage)",
        "",
        f"Steady phase: {args.rate:.0f} calls/s for {args.duration:g} s; tight loop: {args.loop} calls; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs. Sink: local OTLP/HTTP, accepts, discards.",
        "",
        "| variant | p50 µs (steady) | p99 µs (steady) | process CPU µs/call (steady) | dropped (steady) "
        "| tight loop µs/call | dropped in tight loop | p50 vs OTel | p50 vs Langfuse |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        vs_otel = f"{r['p50_us'] / otel['p50_us']:.2f}x" if otel else "—"
        vs_lf = f"{r['p50_us'] / langfuse['p50_us']:.2f}x" if langfuse else "—"
        undecorated = r["variant"] == "undecorated"
        dropped = "—" if undecorated else str(r["dropped"])
        loop_dropped = "—" if undecorated else str(r["loop_dropped"])
        lines.append(
            f"| {r['variant']} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['cpu_us_per_call']:.1f} "
            f"| {dropped} | {r['loop_us']:.1f} | {loop_dropped} | {vs_otel} | {vs_lf} |"
        )
    lines += ["", "Targets, `@veil.observe` in this run:"]
    for name in ("veil", "veil_pii"):
        r = by_name.get(name)
        if r is None or otel is None:
            continue
        checks = [
            f"p50 {r['p50_us'] / otel['p50_us']:.2f}x OTel (target ≤ 0.5)",
            f"CPU/call {r['cpu_us_per_call']:.1f} vs OTel {otel['cpu_us_per_call']:.1f} µs (target ≤)",
            f"dropped {r['dropped']} (target 0)",
        ]
        if langfuse is not None:
            checks.insert(1, f"p50 {r['p50_us'] / langfuse['p50_us']:.2f}x Langfuse (target ≤ 0.2)")
        lines.append(f"- `{name}`: " + "; ".join(checks))
    lines += [
        "",
        "Process CPU per call covers the steady phase plus the final flush: the caller's work, the export "
        "thread's (conversion, scrubbing, protobuf, gzip, HTTP) and the sleep-paced loop (`undecorated`).",
        "The tight loop calls back to back in its own process; every exporter falls behind there, so its "
        "drops show queue behaviour under overload, not the 2,000 calls/s target.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (2 s steady, 5,000-call loop)")
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--loop", type=int, default=20000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("steady", "loop"), help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.phase, args.sink, args.rate, args.duration, args.loop)))
        return
    if args.quick:
        args.duration, args.loop = 2.0, 5000
    sink = Sink()
    results = []
    for variant in args.variants.split(","):
        print(f"running {variant} ...", flush=True)
        result = run_variant(variant, sink, args)
        if result is not None:
            results.append(result)
    table = render(results, args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
