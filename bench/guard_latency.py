"""Latency and throughput of the guard's toxicity scoring: micro-batched ``POST /v1/guard`` against
calling detoxify once per request, on the same model and device, in the same run.

Both sides serve the same texts to 1, 8 and 64 concurrent closed-loop clients:

- ``guard``: Veil's ``POST /v1/guard`` route (the real route, its micro-batcher and the collector's
  length-bucketed classifier in its own process, as the collector runs it by default; authentication and
  the decision log are switched off, they are not what is measured);
- ``per-request``: an endpoint in the same app that calls ``Detoxify.predict(text)`` for every request, as
  a plain FastAPI service would (sync route, FastAPI's threadpool).

Over HTTP the clients of each row are spread over ``--client-procs`` load-generator processes, each an
asyncio loop of plain keep-alive HTTP/1.1 connections (see :class:`Connection` for why not httpx), so the
load reaching the server is what the row says. With ``--transport inproc`` (machines without the web
stack, e.g. the GPU image) clients call ``GuardService.check`` and ``Detoxify.predict`` (on worker threads)
directly, without HTTP. ``--torch-threads`` sets the server's intra-op threads for both sides alike.

The model: detoxify ``original`` weights from ``$VEIL_MODELS_DIR/original`` when present; otherwise a
random-weight checkpoint with bert-base's exact shape (12 layers, hidden 768, 30,522-token vocabulary) is
written in detoxify's release format and loaded through the same loader. Speed depends on the shape, not
on the weights. Texts are 10 to 60 words.

Targets at 64 clients: guard throughput >= 10x per-request, guard p99 <= 3x its p50.

Usage: python bench/guard_latency.py [--quick] [--device auto|cpu|cuda] [--transport http|inproc]
       [--client-procs N] [--torch-threads N] [--forward-batch N] [--in-process-model]
       [--precision auto|fp32|bf16|int8] [--out DIR]
Writes guard_latency.<device>.<transport>[.<precision>].md into ``--out`` (default bench/results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
CLIENTS = (1, 8, 64)
GUARD, PER_REQUEST = "guard (micro-batched)", "per-request detoxify"
_VOCABULARY = (
    "the a you are is was not very really this that what when why how people thanks please help me with "
    "code python error fix it idiot stupid nice day hello world good bad love hate women men friend "
    "customer order refund late package support reply message account password reset team meeting "
    "tomorrow today report data model answer question explain summary write email review"
)
WORDS = tuple(_VOCABULARY.split())


def build_random_bert_base(folder: Path) -> None:
    """Writes a random-weight bert-base-shaped detoxify ``original`` checkpoint plus config and tokenizer,
    with a vocabulary that holds every word of the benchmark's texts (each one token)."""
    from classify import write_checkpoint  # imported here: the load generators need no torch

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    write_checkpoint(folder, vocab + [f"tok{i:05d}" for i in range(30522 - len(vocab))])


def models_dir() -> tuple[Path, str]:
    """The folder holding ``original/`` and a description of the weights in it."""
    configured = os.environ.get("VEIL_MODELS_DIR")
    if configured and (Path(configured) / "original").is_dir():
        return Path(configured), f"the detoxify checkpoint in {Path(configured) / 'original'}"
    folder = Path(tempfile.gettempdir()) / "veil-bench-models"
    if not any((folder / "original").glob("*.ckpt")):
        build_random_bert_base(folder / "original")
    return folder, "random-weight bert-base (detoxify original shape)"


@dataclass
class Loaded:
    service: Any  # GuardService
    detoxify: Any  # detoxify.Detoxify: the baseline, in this process
    device: str
    classifier: Any  # the guard's TextClassifier (a ClassifierProcess by default)

    def close(self) -> None:
        from veil_collector.classify.process import close_classifier

        self.service.close()
        close_classifier(self.classifier)


def load(
    device: str, forward_batch: int = 64, model_process: bool = True, precision: str = "auto"
) -> tuple[Loaded, str]:
    """The guard service as the collector builds it (its classifier in a child process unless
    ``model_process`` is False, in ``precision``) and, for the baseline, detoxify loaded in this process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from veil_collector.classify.loader import load_model, resolve_model
    from veil_collector.classify.process import ClassifierOptions, ClassifierProcess
    from veil_collector.classify.toxicity import ToxicityClassifier, resolve_device
    from veil_collector.guard.scoring import Scorer
    from veil_collector.guard.service import GuardService

    folder, weights = models_dir()
    target = resolve_device(device)
    loaded = load_model(resolve_model("original", folder), target)
    # The guard gathers up to 64 texts; the classifier runs them in length-sorted passes of forward_batch.
    classifier = (
        ClassifierProcess(
            ClassifierOptions(
                "original",
                models_dir=folder,
                device=str(target),
                batch_size=forward_batch,
                precision=precision,  # type: ignore[arg-type]  # argparse's choices
            )
        )
        if model_process
        else ToxicityClassifier.from_loaded(loaded, batch_size=forward_batch, precision=precision)  # type: ignore[arg-type]
    )
    service = GuardService(Scorer(classifier), max_batch=64)
    return Loaded(service, loaded.detoxify, str(target), classifier), weights


def texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 60))) for _ in range(n)]


@dataclass
class Row:
    mode: str
    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    texts_per_batch: float | None = None  # guard rows: how full the micro-batches were

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


@dataclass
class Sample:
    """What one load generator measured: latencies (s) of requests started in the window, and when the
    last of them ended (``time.time()``)."""

    latencies: list[float]
    last_end: float


async def closed_loop(
    call: Callable[[str], Awaitable[Any]],
    clients: int,
    corpus: list[str],
    window: tuple[float, float],
    *,
    first: int = 0,
    stride: int | None = None,
) -> Sample:
    """``clients`` tasks send one request after the other; those started inside ``window`` count.

    ``window`` is (start, end) in ``time.time()``, so that several client processes measure the same
    interval; what runs before its start is the warm-up. Client ``k`` sends texts ``first + k``,
    ``first + k + stride``, ... of ``corpus`` (``stride`` is the number of clients over all processes).
    Requests in flight when the window closes are waited for and counted, and throughput is measured up
    to the last of them, so a slow device still yields a row (with few requests).
    """
    stride = stride or clients
    latencies: list[float] = []
    last_end = 0.0

    async def client(k: int) -> None:
        nonlocal last_end
        i = first + k
        measured = False
        # Each client measures at least one request, so a row exists even when requests outlast the window.
        while time.time() < window[1] or not measured:
            text = corpus[i % len(corpus)]
            i += stride
            started, wall = time.perf_counter(), time.time()
            await call(text)
            if wall >= window[0]:
                measured = True
                latencies.append(time.perf_counter() - started)
                last_end = max(last_end, time.time())

    await asyncio.gather(*(client(k) for k in range(clients)))
    return Sample(latencies, last_end)


def to_row(mode: str, clients: int, samples: Sequence[Sample], window_start: float) -> Row:
    """One table row from the samples of every load generator of one (mode, clients) run."""
    latencies = sorted(x for sample in samples for x in sample.latencies)
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    seconds = max(sample.last_end for sample in samples) - window_start
    return Row(mode, clients, len(latencies), seconds, p(0.50), p(0.99))


def measuring_window(seconds: float, lead: float = 0.0) -> tuple[float, float]:
    """The window of one row: it opens after ``lead`` (client start-up) plus a warm-up in which batches
    settle and lazy CUDA initialisation is done."""
    start = time.time() + lead + min(2.0, seconds / 2)
    return start, start + seconds


def _batch_totals() -> tuple[float, float]:
    """(texts, batches) the guard's batcher has run so far, from its Prometheus histogram."""
    from veil_collector.guard.service import GUARD_BATCH_TEXTS

    samples = {s.name: s.value for metric in GUARD_BATCH_TEXTS.collect() for s in metric.samples}
    return samples["veil_guard_batch_texts_sum"], samples["veil_guard_batch_texts_count"]


def _mean_batch(before: Sequence[float], after: Sequence[float]) -> float | None:
    batches = after[1] - before[1]
    return (after[0] - before[0]) / batches if batches else None


async def run_inproc(model: Loaded, seconds: float, corpus: list[str]) -> list[Row]:
    from veil_collector.guard.service import RequestContext

    context = RequestContext(project_id="bench")

    async def guard(text: str) -> Any:
        return await model.service.check([text], ["toxicity"], context=context, record=False)

    async def per_request(text: str) -> Any:
        return await asyncio.to_thread(model.detoxify.predict, text)

    rows = []
    for clients in CLIENTS:  # the two sides alternate, so a machine busy for a minute hurts both alike
        for mode, call in ((GUARD, guard), (PER_REQUEST, per_request)):
            before = _batch_totals()
            window = measuring_window(seconds)
            row = to_row(mode, clients, [await closed_loop(call, clients, corpus, window)], window[0])
            if call is guard:
                row.texts_per_batch = _mean_batch(before, _batch_totals())
            rows.append(row)
    return _in_table_order(rows)


def _in_table_order(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda row: (row.mode != GUARD, row.clients))


def serve(
    port: int,
    device: str,
    switch_interval: float | None,
    torch_threads: int | None,
    forward_batch: int,
    model_process: bool,
    precision: str,
) -> None:
    """The HTTP side: the real guard route plus a per-request detoxify endpoint, in one uvicorn app."""
    if torch_threads is not None:
        import torch

        # For the whole server, before any worker thread starts: the guard and the baseline run alike.
        torch.set_num_threads(torch_threads)
        os.environ["OMP_NUM_THREADS"] = str(torch_threads)  # the guard's classifier process, too
    if switch_interval is not None:
        # The batch thread tokenizes in Python while the event loop serves HTTP: a shorter GIL switch
        # interval stops the event loop from waiting up to 5 ms for the GIL at every wake-up.
        sys.setswitchinterval(switch_interval)
    import uvicorn
    from fastapi import Body, FastAPI

    from veil_collector.api.deps import get_project
    from veil_collector.api.routes import guard as guard_route
    from veil_collector.gc_tuning import tune_gc

    model, _ = load(device, forward_batch, model_process, precision)
    tune_gc()  # as the collector's lifespan does after start-up (torch is loaded here for the baseline)
    app = FastAPI()
    app.include_router(guard_route.router)

    @app.get("/batch-totals")
    async def batch_totals() -> list[float]:
        return list(_batch_totals())

    app.state.guard = model.service

    async def bench_project() -> str:  # async: no threadpool hop, like a cached key lookup
        return "bench"

    app.dependency_overrides[get_project] = bench_project

    @app.post("/baseline")
    def baseline(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI's idiom)
        return {"results": [model.detoxify.predict(text) for text in body["texts"]]}

    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        model.close()


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON bodies (the benchmark's load generator).

    Why not httpx: profiled under 64 concurrent requests, one ``httpx.AsyncClient`` spent 74% of its
    process's time in httpcore's connection-pool bookkeeping (``_assign_requests_to_connections`` scans
    every connection for every request: encode/httpcore#1035, encode/httpx#3215). On the 2-core CPU box
    it capped one process at about 80 requests/s against a guard route that served 1,300/s with a trivial
    scorer, so the server saw requests one at a time and batches stayed small. This client costs a few
    tens of microseconds per request.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self._reader, self._writer, self._host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, host)

    async def post(self, path: str, body: bytes) -> bytes:
        """The response body; raises unless the status is 200."""
        self._writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = next(
            (int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            None,
        )
        if length is None:
            raise RuntimeError(f"{path}: response without Content-Length: {head!r}")
        payload = await self._reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {payload[:300]!r}")
        return payload

    def close(self) -> None:
        self._writer.close()


async def generate_load(
    url: str, clients: int, first: int, stride: int, window: tuple[float, float]
) -> Sample:
    """One client process: ``clients`` connections in a closed loop on ``url`` (host, port and path)."""
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    corpus = texts(4096)
    connections = [await Connection.open(host, port) for _ in range(clients)]
    free = list(connections)

    async def post(text: str) -> bytes:
        connection = free.pop()  # closed loop: one request per client in flight, so one is always free
        try:
            return await connection.post(parsed.path, json.dumps({"texts": [text], "record": False}).encode())
        finally:
            free.append(connection)

    try:
        return await closed_loop(post, clients, corpus, window, first=first, stride=stride)
    finally:
        for connection in connections:
            connection.close()


def start_load(
    url: str, clients: int, procs: int, window: tuple[float, float]
) -> list[subprocess.Popen[bytes]]:
    """``clients`` closed-loop clients of ``url`` spread over ``procs`` load-generator processes
    (``--load``), measuring in ``window``; :func:`collect_load` gathers what they measured."""
    shares = [clients // procs + (1 if j < clients % procs else 0) for j in range(procs)]
    commands = [
        [sys.executable, __file__, "--load", url, *map(str, (share, sum(shares[:j]), clients, *window))]
        for j, share in enumerate(shares)
    ]
    return [subprocess.Popen(command, stdout=subprocess.PIPE) for command in commands]


def collect_load(processes: Sequence[subprocess.Popen[bytes]]) -> list[Sample]:
    """Waits for the load generators of :func:`start_load` and returns their samples.

    Raises:
        RuntimeError: a load generator failed.
    """
    samples = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"a load generator failed (exit {process.returncode})")
        samples.append(Sample(**json.loads(out)))
    return samples


def run_http(url: str, seconds: float, client_procs: int) -> list[Row]:
    """Every row's clients spread over ``client_procs`` load-generator processes (``--load``), so the
    client side is never what limits the server."""
    rows = []
    for clients in CLIENTS:  # the two sides alternate, so a machine busy for a minute hurts both alike
        for path, mode in (("/v1/guard", GUARD), ("/baseline", PER_REQUEST)):
            before = _get_json(url + "/batch-totals")
            window = measuring_window(seconds, lead=1.0)  # 1 s for the client processes to start
            processes = start_load(url + path, clients, min(client_procs, clients), window)
            row = to_row(mode, clients, collect_load(processes), window[0])
            if path == "/v1/guard":
                row.texts_per_batch = _mean_batch(before, _get_json(url + "/batch-totals"))
            rows.append(row)
    return _in_table_order(rows)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the benchmark server exited during start-up")
        try:
            _get_json(url + "/batch-totals")
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the benchmark server did not start")


def report(
    rows: list[Row], *, device: str, weights: str, transport: str, seconds: float, torch_threads: int | None
) -> str:
    by = {(r.mode, r.clients): r for r in rows}
    guard64, base64 = by[(GUARD, 64)], by[(PER_REQUEST, 64)]
    speedup = guard64.throughput / base64.throughput
    spread = guard64.p99_ms / guard64.p50_ms
    lines = [
        "# Guard latency: micro-batched POST /v1/guard vs detoxify once per request",
        "",
        f"Device: {device} ({_device_name(device, torch_threads)}); model: {weights}; "
        f"transport: {transport}; "
        f"{seconds:g} s measured per row after a warm-up; CPU threads: {os.cpu_count()}. "
        f"Command: `python bench/guard_latency.py {' '.join(sys.argv[1:])}`.",
        "",
        "| mode | clients | requests | throughput (req/s) | p50 (ms) | p99 (ms) | texts/batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.clients} | {r.requests} | {r.throughput:,.1f} "
            f"| {r.p50_ms:,.1f} | {r.p99_ms:,.1f} "
            f"| {'' if r.texts_per_batch is None else f'{r.texts_per_batch:.1f}'} |"
        )
    lines += [
        "",
        f"At 64 clients: guard throughput is **{speedup:.1f}x** per-request detoxify (target >= 10x: "
        f"{'met' if speedup >= 10 else 'NOT met'}); guard p99/p50 = **{spread:.2f}** (target <= 3: "
        f"{'met' if spread <= 3 else 'NOT met'}).",
        "",
    ]
    return "\n".join(lines)


def _device_name(device: str, torch_threads: int | None) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"torch threads: {torch_threads or torch.get_num_threads()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 s per row instead of 15 s")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--transport", choices=("http", "inproc"), default="http")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--switch-interval", type=float, default=None, help="server's sys.setswitchinterval")
    parser.add_argument("--torch-threads", type=int, default=None, help="server's torch.set_num_threads")
    parser.add_argument(
        "--forward-batch", type=int, default=64, help="texts per forward pass (classifier_batch_size)"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "int8"),
        default="auto",
        help="the guard classifier's precision (VEIL_CLASSIFIER_PRECISION); the baseline keeps detoxify's",
    )
    parser.add_argument("--client-procs", type=int, default=4, help="load-generator processes per row")
    parser.add_argument(
        "--in-process-model",
        action="store_true",
        help="run the guard's classifier in the server process (classifier_process=false), for comparison",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the table")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=6, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(
            args.serve,
            args.device,
            args.switch_interval,
            args.torch_threads,
            args.forward_batch,
            not args.in_process_model,
            args.precision,
        )
        return
    if args.load is not None:
        url, clients, first, stride, start, end = args.load
        window = (float(start), float(end))
        sample = asyncio.run(generate_load(url, int(clients), int(first), int(stride), window))
        print(json.dumps({"latencies": sample.latencies, "last_end": sample.last_end}))
        return
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    if args.transport == "inproc":
        model, weights = load(args.device, args.forward_batch, not args.in_process_model, args.precision)
        device = model.device
        rows = asyncio.run(run_inproc(model, seconds, texts(4096)))
        model.close()
    else:
        _, weights = models_dir()  # built here once, so the server only loads it
        import torch

        device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        port = 18000 + os.getpid() % 1000
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, __file__, "--serve", str(port), "--device", device]
        if args.switch_interval is not None:
            command += ["--switch-interval", str(args.switch_interval)]
        if args.torch_threads is not None:
            command += ["--torch-threads", str(args.torch_threads)]
        command += ["--forward-batch", str(args.forward_batch), "--precision", args.precision]
        if args.in_process_model:
            command.append("--in-process-model")
        process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for(url, process)
            rows = run_http(url, seconds, args.client_procs)
        finally:
            process.terminate()
            process.wait(30)
    transport = (
        args.transport if args.transport == "inproc" else f"http ({args.client_procs} client processes)"
    )
    threads = args.torch_threads if args.transport == "http" else None
    if args.precision != "auto":
        weights += f"; guard classifier in {args.precision}"
    text = report(
        rows, device=device, weights=weights, transport=transport, seconds=seconds, torch_threads=threads
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    variant = "" if args.precision == "auto" else f".{args.precision}"
    (args.out / f"guard_latency.{device.split(':')[0]}.{args.transport}{variant}.md").write_text(text)


if __name__ == "__main__":
    main()
