"""The server's own cost per ``POST /v1/guard`` request over HTTP, against a trivial route in the same run.

On the H200 the classifier needed about 10 ms per batch of 55 texts, yet each batch cycle took 160 to
240 ms over HTTP: the per-request path of the server (HTTP parsing, FastAPI, pydantic, auth, the
service) bounded the route. This benchmark measures exactly that path, so the guard's scorer is an
instant stub (:class:`InstantClassifier`, ``TextClassifier``-shaped, fixed scores for detoxify's six
labels). That fake is legitimate here because the model is not what is measured; everything else is
real: the guard router, ``GuardService`` and its micro-batcher thread, the ``get_project`` dependency
with a real project key resolved in embedded ClickHouse (chDB), the collector's GC tuning, uvicorn.

One server process serves two routes:

- ``guard``: the real ``POST /v1/guard``;
- ``baseline``: a trivial async FastAPI route that reads and parses the same JSON body and answers a
  fixed body of the guard's answer size, so ``guard - baseline`` is the route's own cost and the
  baseline is what uvicorn, Starlette's routing and the load generator cost anyway.

Load: ``bench/guard_latency.py``'s load generator (``--client-procs`` processes of plain keep-alive
HTTP/1.1 connections in a closed loop, body ``{"texts": [one text], "record": false}``). It sends no
headers of its own, so the server's outermost ASGI layer (:class:`WithApiKey`) adds
``Authorization: Bearer <key>`` to every request, of both routes alike (a list append per request).

Per row: requests/s seen by the clients and the server process's CPU time per request (user + system
from ``/proc``, over the measuring window; the batcher thread included), which is far steadier than
throughput on a shared machine. Rows alternate between the routes for ``--rounds`` rounds, so a busy
minute hurts both. ``--against DIR`` also serves the ``collector/`` of another checkout (e.g.
``git archive HEAD collector | tar -x -C DIR``) from a second server and interleaves its rows, to measure
a change before and after in one run.

Usage: python bench/guard_http_overhead.py [--seconds S] [--rounds N] [--clients N] [--client-procs N]
       [--against DIR] [--out FILE]
Writes bench/results/guard_http_overhead.md by default, keeping its hand-written part from ``## Reading`` on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response  # at module level: the routes' annotations resolve here
from guard_latency import (
    _batch_totals,
    _get_json,
    _mean_batch,
    collect_load,
    measuring_window,
    start_load,
    to_row,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "guard_http_overhead.md"
GUARD, BASELINE = "guard", "baseline"
PATHS = {GUARD: "/v1/guard", BASELINE: "/baseline"}
NOTES = "\n## Reading\n"
_LABELS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
# What the guard answers to the load generator's body, so the baseline sends as many bytes back.
_BASELINE_ANSWER = (
    b'{"model":"instant-stub@0","results":[{"passed":true,"checks":[{"check":"toxicity","score":0.01,'
    b'"decision":"pass"}],"labels":null}]}'
)


class InstantClassifier:
    """A ``TextClassifier`` that answers at once with fixed scores: the model is not what is measured."""

    name = "instant-stub"
    version = "0"
    labels = _LABELS
    identity_labels = ("identity_attack",)

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [dict.fromkeys(_LABELS, 0.01) for _ in texts]


class WithApiKey:
    """ASGI wrapper adding ``Authorization: Bearer <key>`` to every request: the load generator of
    ``guard_latency`` sends no headers, and the real ``get_project`` must see a real key."""

    def __init__(self, app: Any, key: str) -> None:
        self._app = app
        self._header = (b"authorization", f"Bearer {key}".encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["headers"] = [*scope["headers"], self._header]
        await self._app(scope, receive, send)


def serve(port: int) -> None:
    """The guard router with the instant scorer and a real project key, plus the baseline route."""
    import uvicorn

    from veil_collector.api.routes import guard as guard_route
    from veil_collector.auth import create_project
    from veil_collector.config import Settings
    from veil_collector.gc_tuning import tune_gc
    from veil_collector.guard.decisions import DecisionLog
    from veil_collector.guard.scoring import Scorer
    from veil_collector.guard.service import GuardService
    from veil_collector.store import Store
    from veil_collector.store.migrate import migrate

    with tempfile.TemporaryDirectory(prefix="veil-guard-http-") as data_dir:
        settings = Settings(data_dir=Path(data_dir), pii_ner_enabled=False)
        store = Store(settings.clickhouse_dsn, database=settings.database)
        migrate(store)
        _, key = create_project(store, "guard-http-overhead")
        service = GuardService(Scorer(InstantClassifier()), decisions=DecisionLog(store), max_batch=64)

        app = FastAPI()
        app.include_router(guard_route.router)
        app.state.settings, app.state.store, app.state.guard = settings, store, service

        @app.post("/baseline")
        async def baseline(request: Request) -> Response:
            json.loads(await request.body())
            return Response(_BASELINE_ANSWER, media_type="application/json")

        @app.get("/batch-totals")
        async def batch_totals() -> list[float]:
            return list(_batch_totals())

        tune_gc()  # as the collector's lifespan does after start-up
        try:
            uvicorn.run(
                WithApiKey(app, key), host="127.0.0.1", port=port, log_level="warning", access_log=False
            )
        finally:
            service.close()
            store.close()


@dataclass
class Server:
    name: str  # "this tree" or the --against folder
    url: str
    process: subprocess.Popen[bytes]


@dataclass
class Measured:
    round: int
    server: str
    route: str
    requests: int
    throughput: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server process CPU per request
    texts_per_batch: float | None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def measure(server: Server, route: str, round_: int, seconds: float, clients: int, procs: int) -> Measured:
    """One row: ``clients`` closed-loop connections over ``procs`` load-generator processes."""
    path = PATHS[route]
    before = _get_json(server.url + "/batch-totals")
    window = measuring_window(seconds, lead=1.0)  # 1 s for the client processes to start
    processes = start_load(server.url + path, clients, procs, window)
    _sleep_until(window[0])
    cpu_start = _cpu_seconds(server.process.pid)
    _sleep_until(window[1])
    cpu = _cpu_seconds(server.process.pid) - cpu_start
    row = to_row(route, clients, collect_load(processes), window[0])
    return Measured(
        round_,
        server.name,
        route,
        row.requests,
        row.throughput,
        row.p50_ms,
        row.p99_ms,
        cpu / row.requests * 1e6,
        _mean_batch(before, _get_json(server.url + "/batch-totals")) if route == GUARD else None,
    )


def start_server(name: str, port: int, collector: Path | None) -> Server:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if collector is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(collector), env.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
    server = Server(name, f"http://127.0.0.1:{port}", process)
    wait_for(server.url, process, timeout=120)
    return server


def report(rows: list[Measured], servers: list[str], args: argparse.Namespace) -> str:
    lines = [
        "# POST /v1/guard: the server's own cost per request over HTTP",
        "",
        f"Command: `python bench/guard_http_overhead.py {' '.join(sys.argv[1:])}`; {os.cpu_count()} CPU "
        f"threads; {args.clients} clients over {args.client_procs} load-generator processes; "
        f"{args.seconds:g} s measured per row; instant stub scorer; real project key.",
        "",
        "| round | server | route | requests | req/s | p50 (ms) | p99 (ms) | server CPU (us/req) "
        "| texts/batch |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        batch = "" if r.texts_per_batch is None else f"{r.texts_per_batch:.1f}"
        lines.append(
            f"| {r.round} | {r.server} | {r.route} | {r.requests} | {r.throughput:,.0f} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.cpu_us:,.0f} | {batch} |"
        )
    lines += [
        "",
        "Medians over the rounds (the ratios are medians of each round's own ratio):",
        "",
        "| server | guard req/s | baseline req/s | guard CPU (us/req) | baseline CPU (us/req) "
        "| route's own CPU (us/req) | CPU ratio guard/baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in servers:
        mine = [r for r in rows if r.server == name]
        pairs = [
            (g, b)
            for g in mine
            for b in mine
            if g.route == GUARD and b.route == BASELINE and g.round == b.round
        ]
        med = statistics.median
        lines.append(
            f"| {name} | {med(g.throughput for g, _ in pairs):,.0f} "
            f"| {med(b.throughput for _, b in pairs):,.0f} "
            f"| {med(g.cpu_us for g, _ in pairs):,.0f} | {med(b.cpu_us for _, b in pairs):,.0f} "
            f"| {med(g.cpu_us - b.cpu_us for g, b in pairs):,.0f} "
            f"| {med(g.cpu_us / b.cpu_us for g, b in pairs):.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--against", type=Path, default=None, help="another checkout to serve too")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    port = 19000 + os.getpid() % 1000
    wanted: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.against is not None:
        wanted.insert(0, (str(args.against), args.against.resolve() / "collector"))
    servers: list[Server] = []
    rows: list[Measured] = []
    try:
        for i, (name, collector) in enumerate(wanted):
            servers.append(start_server(name, port + i, collector))
        for round_ in range(1, args.rounds + 1):
            for server in servers:
                for route in (BASELINE, GUARD):
                    rows.append(measure(server, route, round_, args.seconds, args.clients, args.client_procs))
                    print(rows[-1], flush=True)
    finally:
        for server in servers:
            # SIGINT, not SIGTERM: uvicorn re-raises the signal after its shutdown, and only a
            # KeyboardInterrupt lets the server's cleanup (its temporary ClickHouse folder) run.
            server.process.send_signal(signal.SIGINT)
            server.process.wait(30)
    text = report(rows, [s.name for s in servers], args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Hand-written notes from the marker on survive a rerun; the tables above it are replaced.
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(text + (old[old.index(NOTES) :] if NOTES in old else ""))


if __name__ == "__main__":
    main()
