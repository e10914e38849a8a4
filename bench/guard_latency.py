"""Latency and throughput of the guard's toxicity scoring: micro-batched ``POST /v1/guard`` against
calling detoxify once per request, on the same model and device, in the same run.

Both sides serve the same texts to 1, 8 and 64 concurrent closed-loop clients:

- ``guard``: Veil's ``POST /v1/guard`` route (the real route, its micro-batcher and the collector's
  length-bucketed classifier; authentication and the decision log are switched off, they are not what is
  measured);
- ``per-request``: an endpoint in the same app that calls ``Detoxify.predict(text)`` for every request, as
  a plain FastAPI service would (sync route, FastAPI's threadpool).

With ``--transport inproc`` (machines without the web stack, e.g. the GPU image) clients call
``GuardService.check`` and ``Detoxify.predict`` (on worker threads) directly, without HTTP.

The model: detoxify ``original`` weights from ``$VEIL_MODELS_DIR/original`` when present; otherwise a
random-weight checkpoint with bert-base's exact shape (12 layers, hidden 768, 30,522-token vocabulary) is
written in detoxify's release format and loaded through the same loader. Speed depends on the shape, not
on the weights. Texts are 10 to 60 words.

Targets at 64 clients: guard throughput >= 10x per-request, guard p99 <= 3x its p50.

Usage: python bench/guard_latency.py [--quick] [--device auto|cpu|cuda] [--transport http|inproc]
Writes bench/results/guard_latency.<device>.<transport>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
CLIENTS = (1, 8, 64)
_VOCABULARY = (
    "the a you are is was not very really this that what when why how people thanks please help me with "
    "code python error fix it idiot stupid nice day hello world good bad love hate women men friend "
    "customer order refund late package support reply message account password reset team meeting "
    "tomorrow today report data model answer question explain summary write email review"
)
WORDS = tuple(_VOCABULARY.split())


def build_random_bert_base(folder: Path) -> None:
    """Writes a random-weight bert-base-shaped detoxify ``original`` checkpoint plus config and tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    classes = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += [f"tok{i:05d}" for i in range(30522 - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(num_labels=len(classes))  # bert-base: 12 layers, hidden 768, vocab 30522
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512).save_pretrained(folder)
    config.save_pretrained(folder)
    checkpoint = {
        "config": {
            "arch": {
                "args": {
                    "model_type": "bert-base-uncased",
                    "model_name": "BertForSequenceClassification",
                    "tokenizer_name": "BertTokenizer",
                    "num_classes": len(classes),
                }
            },
            "dataset": {"args": {"classes": classes}},
        },
        "state_dict": model.state_dict(),
    }
    torch.save(checkpoint, folder / "toxic_random-bertbase.ckpt")


def models_dir() -> tuple[Path, str]:
    """The folder holding ``original/`` and a description of the weights in it."""
    configured = os.environ.get("VEIL_MODELS_DIR")
    if configured and (Path(configured) / "original").is_dir():
        return Path(configured), f"the detoxify checkpoint in {Path(configured) / 'original'}"
    folder = Path(tempfile.gettempdir()) / "veil-bench-models"
    if not (folder / "original" / "toxic_random-bertbase.ckpt").exists():
        build_random_bert_base(folder / "original")
    return folder, "random-weight bert-base (detoxify original shape)"


@dataclass
class Loaded:
    service: Any  # GuardService
    detoxify: Any  # detoxify.Detoxify on the same model object
    device: str


def load(device: str) -> tuple[Loaded, str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from veil_collector.classify.loader import load_model, resolve_model
    from veil_collector.classify.toxicity import ToxicityClassifier, resolve_device
    from veil_collector.guard.scoring import Scorer
    from veil_collector.guard.service import GuardService

    folder, weights = models_dir()
    target = resolve_device(device)
    loaded = load_model(resolve_model("original", folder), target)
    classifier = ToxicityClassifier.from_loaded(loaded, batch_size=64)
    service = GuardService(Scorer(classifier), max_batch=64)
    return Loaded(service, loaded.detoxify, str(target)), weights


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


async def closed_loop(
    call: Callable[[str], Awaitable[Any]], clients: int, seconds: float, corpus: list[str]
) -> Row:
    """``clients`` tasks send one request after the other; those started in the ``seconds`` window count.

    Requests in flight when the window closes are waited for and counted, and throughput is measured up
    to the last of them, so a slow device still yields a row (with few requests).
    """
    latencies: list[float] = []
    window: list[float] = []  # [start, end] of the measuring window, once open
    last_end = 0.0

    async def client(k: int) -> None:
        nonlocal last_end
        i = k
        measured = False
        # Each client measures at least one request, so a row exists even when requests outlast the window.
        while not window or time.perf_counter() < window[1] or not measured:
            text = corpus[i % len(corpus)]
            i += clients
            started = time.perf_counter()
            await call(text)
            ended = time.perf_counter()
            if window and started >= window[0]:
                measured = True
                latencies.append(ended - started)
                last_end = max(last_end, ended)

    tasks = [asyncio.create_task(client(k)) for k in range(clients)]
    await asyncio.sleep(min(2.0, seconds / 2))  # warm-up: batches settle, lazy CUDA init done
    now = time.perf_counter()
    window.extend((now, now + seconds))
    await asyncio.gather(*tasks)
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return Row("", clients, len(latencies), last_end - window[0], p(0.50), p(0.99))


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

    rows = []
    for clients in CLIENTS:
        before = _batch_totals()
        row = await closed_loop(guard, clients, seconds, corpus)
        row.mode = "guard (micro-batched)"
        row.texts_per_batch = _mean_batch(before, _batch_totals())
        rows.append(row)
    for clients in CLIENTS:
        row = await closed_loop(
            lambda text: asyncio.to_thread(model.detoxify.predict, text), clients, seconds, corpus
        )
        row.mode = "per-request detoxify"
        rows.append(row)
    return rows


def serve(port: int, device: str, switch_interval: float | None) -> None:
    """The HTTP side: the real guard route plus a per-request detoxify endpoint, in one uvicorn app."""
    if switch_interval is not None:
        # The batch thread tokenizes in Python while the event loop serves HTTP: a shorter GIL switch
        # interval stops the event loop from waiting up to 5 ms for the GIL at every wake-up.
        sys.setswitchinterval(switch_interval)
    import uvicorn
    from fastapi import Body, FastAPI
    from veil_collector.api.deps import get_project
    from veil_collector.api.routes import guard as guard_route

    model, _ = load(device)
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

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def run_http(url: str, seconds: float, corpus: list[str]) -> list[Row]:
    import httpx

    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        def poster(path: str) -> Callable[[str], Awaitable[Any]]:
            async def post(text: str) -> Any:
                response = await client.post(path, json={"texts": [text], "record": False})
                response.raise_for_status()
                return response

            return post

        rows = []
        for path, mode in (("/v1/guard", "guard (micro-batched)"), ("/baseline", "per-request detoxify")):
            for clients in CLIENTS:
                before = (await client.get("/batch-totals")).json()
                row = await closed_loop(poster(path), clients, seconds, corpus)
                row.mode = mode
                if path == "/v1/guard":
                    row.texts_per_batch = _mean_batch(before, (await client.get("/batch-totals")).json())
                rows.append(row)
        return rows


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the benchmark server exited during start-up")
        try:
            httpx.get(url + "/docs", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("the benchmark server did not start")


def report(rows: list[Row], *, device: str, weights: str, transport: str, seconds: float) -> str:
    by = {(r.mode, r.clients): r for r in rows}
    guard64, base64 = by[("guard (micro-batched)", 64)], by[("per-request detoxify", 64)]
    speedup = guard64.throughput / base64.throughput
    spread = guard64.p99_ms / guard64.p50_ms
    lines = [
        "# Guard latency: micro-batched POST /v1/guard vs detoxify once per request",
        "",
        f"Device: {device} ({_device_name(device)}); model: {weights}; transport: {transport}; "
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


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{torch.get_num_threads()} torch threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 s per row instead of 15 s")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--transport", choices=("http", "inproc"), default="http")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--switch-interval", type=float, default=None, help="server's sys.setswitchinterval")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.device, args.switch_interval)
        return
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    corpus = texts(4096)
    if args.transport == "inproc":
        model, weights = load(args.device)
        device = model.device
        rows = asyncio.run(run_inproc(model, seconds, corpus))
        model.service.close()
    else:
        _, weights = models_dir()  # built here once, so the server only loads it
        import torch

        device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        port = 18000 + os.getpid() % 1000
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, __file__, "--serve", str(port), "--device", device]
        if args.switch_interval is not None:
            command += ["--switch-interval", str(args.switch_interval)]
        process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for(url, process)
            rows = asyncio.run(run_http(url, seconds, corpus))
        finally:
            process.terminate()
            process.wait(30)
    text = report(rows, device=device, weights=weights, transport=args.transport, seconds=seconds)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"guard_latency.{device.split(':')[0]}.{args.transport}.md").write_text(text)


if __name__ == "__main__":
    main()
