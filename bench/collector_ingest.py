"""Collector ingest benchmark: sustained spans/s over OTLP/HTTP into embedded ClickHouse.

Three measurements in one run, on the same generated rows:

1. **Collector**: the collector runs as a subprocess (embedded ClickHouse in a temp folder, pattern scrub
   on, NER off, auth off); several client processes post realistic GenAI spans (1-2 KB of content,
   512 spans per request, protobuf). Sustained rate = acknowledged spans / time from the first request
   until the spool is fully drained into ClickHouse.
2. **Bare insert**: a separate process inserts the same rows (``otel_traces`` and ``llm_calls``, flattened
   beforehand and not timed) with clickhouse-connect into its own embedded ClickHouse, 10k rows per insert.
3. **Export -> queryable latency**: with a background client at about half the sustained rate, probe
   requests of one span are sent and ``GET /api/traces/{id}`` is polled until the trace is returned.

The rate of this machine moves by up to 2x within minutes (its page faults and disk syncs are slow at
times), so one collector run against one bare insert gives a ratio anywhere between the two. The first two
measurements therefore run in ``--rounds`` (5) interleaved rounds (collector then bare insert, then the other
way round, ...), each on a fresh ClickHouse; the table reports each round and the medians, and the ratio
is the median of the rounds' own ratios (each between two runs minutes apart at most).

Prints a table and writes it to ``bench/results/collector_ingest.md``. ``--quick`` runs a smaller load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import pickle
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "collector" / "ingest"))

from ingest_spans import genai_request, unique_ids  # noqa: E402

SPANS_PER_REQUEST = 512
RESULTS = ROOT / "bench" / "results" / "collector_ingest.md"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_bodies(client_id: int, requests: int) -> list[bytes]:
    ids = unique_ids(client_id)
    return [genai_request(SPANS_PER_REQUEST, ids).SerializeToString() for _ in range(requests)]


def start_collector(folder: Path, receiver_processes: int) -> tuple[subprocess.Popen[bytes], str]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "VEIL_CLICKHOUSE_DSN": f"chdb://{folder / 'clickhouse'}",
        "VEIL_DATA_DIR": str(folder / "data"),
        "VEIL_PORT": str(port),
        "VEIL_NO_AUTH": "true",
        "VEIL_PII_NER_ENABLED": "false",
        # Ingest alone: classifiers and alerts are measured by their own benchmarks.
        "VEIL_CLASSIFIERS_ENABLED": "false",
        "VEIL_ALERTS_ENABLED": "false",
        "VEIL_SPOOL_MAX_BYTES": str(8 * 1024**3),
        "VEIL_RECEIVER_PROCESSES": str(receiver_processes),
    }
    log = open(folder / "collector.log", "wb")  # noqa: SIM115 - the child process owns it
    process = subprocess.Popen(
        [sys.executable, "-m", "veil_collector.server"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((folder / "collector.log").read_text()[-3000:])
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("collector did not start")


def send(url: str, bodies: list[bytes]) -> tuple[int, float]:
    """Post ``bodies`` one after another; the spans acknowledged and when the first request was sent
    (``perf_counter`` is CLOCK_MONOTONIC, one clock for every process of the machine)."""
    acked = 0
    first_sent = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for body in bodies:
            while True:
                response = client.post(
                    f"{url}/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
                )
                if response.status_code == 200:
                    acked += SPANS_PER_REQUEST
                    break
                if response.status_code != 503:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
                time.sleep(float(response.headers.get("Retry-After", "1")))
    return acked, first_sent


def _client(
    url: str,
    payload_file: Path,
    ready: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[int, float]],
) -> None:
    """One client process: load its requests, wait for the others, send."""
    bodies = pickle.loads(payload_file.read_bytes())
    ready.wait()
    results.put(send(url, bodies))


def wait_drained(url: str) -> None:
    while httpx.get(f"{url}/readyz", timeout=30).json()["spool"]["records"]:
        time.sleep(0.05)


def measure_collector(url: str, payload_files: list[Path]) -> tuple[int, float]:
    """Spans acknowledged and seconds from the first request until the spool is drained.

    Each client process has started (imports done) and loaded its requests from its file before any of
    them sends, so neither their start-up nor handing them the requests is timed or run beside the
    collector's work.
    """
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(len(payload_files) + 1)
    results = context.Queue()
    clients = [context.Process(target=_client, args=(url, f, ready, results)) for f in payload_files]
    for client in clients:
        client.start()
    ready.wait()
    sent = [results.get() for _ in clients]
    wait_drained(url)
    finished = time.perf_counter()
    for client in clients:
        client.join()
    return sum(acked for acked, _ in sent), finished - min(first for _, first in sent)


def measure_latency(url: str, probes: int, background_rate: float, background: list[bytes]) -> list[float]:
    """Export -> queryable seconds of ``probes`` one-span traces, with a paced background load."""
    stop = threading.Event()

    def paced() -> None:
        interval = SPANS_PER_REQUEST / background_rate
        with httpx.Client(timeout=60) as client:
            for body in background:
                if stop.is_set():
                    return
                started = time.perf_counter()
                client.post(
                    f"{url}/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
                )
                stop.wait(max(interval - (time.perf_counter() - started), 0))

    loader = threading.Thread(target=paced)
    loader.start()
    latencies = []
    ids = unique_ids(999)
    with httpx.Client(timeout=30) as client:
        for _ in range(probes):
            request = genai_request(1, ids)
            trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
            started = time.perf_counter()
            client.post(
                f"{url}/v1/traces",
                content=request.SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
            )
            while client.get(f"{url}/api/traces/{trace_id}").status_code != 200:
                time.sleep(0.01)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.1)
    stop.set()
    loader.join()
    return latencies


def bare_insert_and_stage_costs(
    folder: Path, payload_files: list[Path], stage_costs: bool
) -> dict[str, object]:
    """Run in a subprocess with its own embedded ClickHouse (``--bare-insert``): the bare insert of the
    flattened rows, then, with ``stage_costs``, the CPU seconds per span of each collector stage, as the
    collector runs them: decode, scrub and encoding (in its receiver workers) on a sample of requests, and
    the insert of the encoded rows (in the server) on all of them, in drain batches of 10,240 spans."""
    import clickhouse_connect
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from veil_collector.gc_tuning import tune_gc
    from veil_collector.pricing import PriceTable
    from veil_collector.receiver import Encoding, prepare
    from veil_collector.scrub import ServerScrubber, pii_findings_for_span
    from veil_collector.store import Store
    from veil_collector.store.flatten import LLM_CALL_COLUMNS, TRACE_COLUMNS, FlatBatch, Flattener
    from veil_collector.store.migrate import migrate
    from veil_collector.store.native import RequestEncoder

    bodies = [body for file in payload_files for body in pickle.loads(file.read_bytes())]
    migrate(Store(f"chdb://{folder}", database="veil"))
    requests = [("p", ExportTraceServiceRequest.FromString(body)) for body in bodies]
    flat = FlatBatch()
    Flattener().flatten(requests, batch=1, out=flat)
    client = clickhouse_connect.get_client(dsn=f"chdb://{folder}", database="veil")
    client.insert("otel_traces", flat.traces[:512], column_names=list(TRACE_COLUMNS))  # warm-up, not timed
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(flat.traces), 10_000):
        client.insert("otel_traces", flat.traces[i : i + 10_000], column_names=list(TRACE_COLUMNS))
        client.insert("llm_calls", flat.llm_calls[i : i + 10_000], column_names=list(LLM_CALL_COLUMNS))
    wall, insert_cpu = time.perf_counter() - started, time.process_time() - cpu
    rows = len(flat.traces)
    if not stage_costs:
        return {"rows": rows, "wall": wall, "stages": {}, "bare_cpu": insert_cpu / rows}

    # Measure the stages as the collector runs them: start-up objects frozen out of GC passes
    # (``tune_gc``), rows encoded without GenAICall records (the collector here has no classifier stage),
    # and not next to the 46k flattened rows above.
    del flat
    tune_gc()
    sample = bodies[:4]
    spans = len(sample) * SPANS_PER_REQUEST
    scrubber = ServerScrubber(ner_enabled=False)
    store = Store(f"chdb://{folder}", database="encoded")
    migrate(store)
    flattener = Flattener(cost_usd=PriceTable.load().cost_usd, pii_findings=pii_findings_for_span)
    encoder = RequestEncoder.for_store(store, flattener, calls=False)
    encoded = [encoder.encode(project, request) for project, request in requests]
    del requests[4:]
    cpu = time.process_time()
    for i in range(0, len(encoded), 20):
        for table in encoder.tables:
            blocks = b"".join(encoder.blocks(table, [rows.tables[table] for rows in encoded[i : i + 20]], i))
            if blocks:
                store.insert_native(table, blocks, encoder.insert_columns(table))
    encoded_insert_cpu = time.process_time() - cpu

    def cpu_per_span(work: Callable[[], object]) -> float:
        """The fastest of 5 passes after a warm-up one (the first pass pays one-off set-up, such as the
        pattern scan's scratch space)."""
        work()
        passes = []
        for _ in range(5):
            begin = time.process_time()
            work()
            passes.append(time.process_time() - begin)
        return min(passes) / spans

    stages = {
        "decode + validate (receiver workers)": cpu_per_span(
            lambda: [prepare(body, None, Encoding.PROTOBUF, 1 << 30, None) for body in sample]
        ),
        "pattern scrub, fast pass (receiver workers)": cpu_per_span(
            lambda: [scrubber.fast_pass(ExportTraceServiceRequest.FromString(body)) for body in sample]
        ),
        "flatten + encode the rows, with prices (receiver workers)": cpu_per_span(
            lambda: [encoder.encode(project, request) for project, request in requests]
        ),
        "insert the encoded rows (server)": encoded_insert_cpu / rows,
    }
    return {"rows": rows, "wall": wall, "stages": stages, "bare_cpu": insert_cpu / rows}


def measure_bare_insert(
    folder: Path, payload_files: list[Path], stage_costs: bool
) -> tuple[int, float, float, dict[str, float]]:
    """Rows, seconds and CPU seconds per row of the bare insert, and (with ``stage_costs``) CPU seconds
    per span of each collector stage."""
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            *(["--stage-costs"] if stage_costs else []),
            "--bare-insert",
            str(folder),
            *map(str, payload_files),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return data["rows"], data["wall"], data["bare_cpu"], data["stages"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 12k spans)")
    parser.add_argument("--clients", type=int, default=3, help="concurrent client processes")
    parser.add_argument(
        "--receiver-processes", type=int, default=2, help="collector worker processes for decode and scrub"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved collector / bare insert rounds")
    parser.add_argument("--bare-insert", nargs="+", metavar="FOLDER PAYLOADS", help=argparse.SUPPRESS)
    parser.add_argument("--stage-costs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_insert:
        folder, *payload_files = map(Path, args.bare_insert)
        print(json.dumps(bare_insert_and_stage_costs(folder, payload_files, args.stage_costs)))
        return
    requests_per_client = 8 if args.quick else 30
    probes = 15 if args.quick else 40
    rounds = 1 if args.quick else args.rounds

    with tempfile.TemporaryDirectory(prefix="veil-bench-ingest-") as tmp:
        folder = Path(tmp)
        payload_files = []
        for c in range(args.clients):
            bodies = make_bodies(c, requests_per_client)
            payload_files.append(folder / f"client-{c}.pickle")
            payload_files[-1].write_bytes(pickle.dumps(bodies))
        content_bytes = len(bodies[0]) / SPANS_PER_REQUEST
        collector_rates: list[float] = []
        bare_rates: list[float] = []
        latencies: list[float] = []
        for r in range(rounds):
            phases = ("collector", "bare") if r % 2 == 0 else ("bare", "collector")
            for phase in phases:
                # Write back what earlier phases left in the page cache (payloads, the other phase's
                # ClickHouse parts) now: otherwise the kernel writes it back during the next timed phase.
                os.sync()
                if phase == "bare":
                    rows, bare_seconds, bare_cpu, stages = measure_bare_insert(
                        folder / f"bare-{r}", payload_files, stage_costs=r == rounds - 1
                    )
                    bare_rates.append(rows / bare_seconds)
                    continue
                process, url = start_collector(folder / f"collector-{r}", args.receiver_processes)
                try:
                    acked, seconds = measure_collector(url, payload_files)
                    collector_rates.append(acked / seconds)
                    if r == 0:
                        latencies = measure_latency(url, probes, acked / seconds / 2, make_bodies(50, 40))
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(60)

    ratios = [c / b for c, b in zip(collector_rates, bare_rates, strict=True)]
    collector_rate = statistics.median(collector_rates)
    bare_rate = statistics.median(bare_rates)
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    cpus = os.cpu_count()
    table = "\n".join(
        [
            f"# Collector ingest ({'quick' if args.quick else 'full'} run, {cpus} CPUs)",
            "",
            f"{acked} spans of {content_bytes:.0f} bytes each (protobuf), {SPANS_PER_REQUEST} spans per "
            f"request, {args.clients} client processes; embedded ClickHouse; pattern scrub on, NER off; "
            f"{args.receiver_processes} receiver worker processes; {rounds} interleaved rounds.",
            "",
            "| measurement | value | target |",
            "| --- | --- | --- |",
            f"| collector sustained spans/s (ack + stored), median | {collector_rate:,.0f} | >= 10,000 |",
            f"| bare clickhouse-connect insert rows/s (same rows), median | {bare_rate:,.0f} | |",
            f"| collector / bare insert, median of the rounds | {statistics.median(ratios):.0%} | >= 30% |",
            f"| export -> queryable p50 (s), {len(latencies)} probes at 50% load | {p50:.3f} | |",
            f"| export -> queryable p95 (s) | {p95:.3f} | <= 2 |",
            "",
            "| round | collector spans/s | bare insert rows/s | collector / bare |",
            "| --- | --- | --- | --- |",
            *[
                f"| {r + 1} | {c:,.0f} | {b:,.0f} | {c / b:.0%} |"
                for r, (c, b) in enumerate(zip(collector_rates, bare_rates, strict=True))
            ],
            "",
            "CPU time per span by stage, measured after the last round's bare insert (process time, fastest "
            "of 5 passes over 4 requests):",
            "",
            "| stage | CPU µs per span |",
            "| --- | --- |",
            *[f"| {name} | {seconds * 1e6:.1f} |" for name, seconds in stages.items()],
            f"| total | {sum(stages.values()) * 1e6:.1f} |",
            "",
            f"The bare insert (clickhouse-connect serializing the flattened rows, then chDB) used "
            f"{bare_cpu * 1e6:.1f} CPU µs per row (last round).",
            "",
        ]
    )
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)


if __name__ == "__main__":
    main()
