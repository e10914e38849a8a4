"""SDK classifier checks against a live collector over HTTP, a stopped one, a stuck one, and in-process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import veil.guardrails as vg
from veil.guardrails import LocalClassifier, RemoteClassifier, Toxicity
from veil_collector.app import create_app
from veil_collector.auth import create_project
from veil_collector.config import Settings
from veil_collector.guard.scoring import ScoreItem, Scorer
from veil_collector.guard.service import GuardService


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveCollector:
    """The collector app served by uvicorn on a thread; ``stop()`` takes it down."""

    def __init__(self, settings: Settings, store: Any, service: GuardService) -> None:
        app = create_app(settings)
        app.state.store = store
        app.state.guard = service
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the collector did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture
def live(chdb_dsn: str, store: Any, tmp_path: Path, toxicity: Any) -> Iterator[tuple[LiveCollector, str]]:
    settings = Settings(
        clickhouse_dsn=chdb_dsn, database=store.database, data_dir=tmp_path, pii_ner_enabled=False
    )
    service = GuardService(Scorer(toxicity))
    collector = LiveCollector(settings, store, service)
    yield collector, create_project(store, "sdk")[1]
    collector.stop()
    service.close()


def test_sdk_scores_on_the_collector(live: tuple[LiveCollector, str], toxicity: Any) -> None:
    collector, key = live
    remote = RemoteClassifier(endpoint=collector.url + "/v1/traces", api_key=key)
    text = "you are a stupid idiot"
    expected = Scorer(toxicity).score([ScoreItem(text, False)])[0].toxicity

    passed = vg.check_input(text, checks=[Toxicity(threshold=1.0, backend=remote)], timeout=10)
    assert passed.passed and passed.decisions[0].score == pytest.approx(expected, abs=1e-5)

    blocked = vg.check_output(text, checks=[Toxicity(threshold=0.0, backend=remote)], timeout=10)
    assert not blocked.passed and blocked.decisions[0].decision == "block"

    flagged = vg.check_output(text, checks=[vg.Bias(threshold=0.0, backend=remote)], timeout=10)
    assert flagged.passed and flagged.decisions[0].decision == "flag"  # bias flags by default


def test_a_wrong_key_makes_the_check_unavailable(live: tuple[LiveCollector, str]) -> None:
    collector, _ = live
    remote = RemoteClassifier(endpoint=collector.url, api_key="vk_wrong")
    result = vg.check_input("hello", checks=[Toxicity(backend=remote)], timeout=10, fail_open=False)
    assert not result.passed
    assert "collector answered 401" in result.decisions[0].reason


def test_stopped_collector_fail_open_passes_and_flags_fail_closed_blocks(
    live: tuple[LiveCollector, str],
) -> None:
    collector, key = live
    remote = RemoteClassifier(endpoint=collector.url, api_key=key)
    check = Toxicity(threshold=1.0, backend=remote)  # the random model's scores never reach 1.0
    assert vg.check_input("hello", checks=[check], timeout=10).decisions[0].decision == "pass"
    collector.stop()

    @vg.guard(input=[check], output=[], fail_open=True, timeout=5)
    def open_chat(prompt: str) -> str:
        return "answered"

    @vg.guard(input=[check], output=[], fail_open=False, timeout=5)
    def closed_chat(prompt: str) -> str:
        return "answered"

    assert open_chat("hello") == "answered"
    opened = vg.check_input("hello", checks=[check], timeout=5)
    assert opened.passed and opened.decisions[0].decision == "flag" and opened.decisions[0].unavailable
    with pytest.raises(vg.GuardViolation, match="unavailable"):
        closed_chat("hello")


class _StuckHandler(BaseHTTPRequestHandler):
    release: threading.Event

    def do_POST(self) -> None:
        self.release.wait(30)
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_stuck_collector_never_holds_the_call_past_its_timeout() -> None:
    release = threading.Event()
    handler = type("Handler", (_StuckHandler,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    remote = RemoteClassifier(endpoint=f"http://127.0.0.1:{server.server_address[1]}")
    try:

        @vg.guard(input=[Toxicity(backend=remote)], output=[], timeout=0.2)
        async def chat(prompt: str) -> str:
            return "answered"

        # The server answers only after `release` is set, which happens after the call returned: the
        # call cannot have waited for it.
        assert asyncio.run(chat("hello")) == "answered"
        result = vg.check_input("hello", checks=[Toxicity(backend=remote)], timeout=0.2, fail_open=False)
        assert not result.passed and result.decisions[0].reason == "unavailable: no answer within 0.2 s"
    finally:
        release.set()
        server.shutdown()


def test_local_classifier_scores_in_process_like_the_collector(models_dir: Path, toxicity: Any) -> None:
    assert LocalClassifier.available("original", models_dir)
    assert not LocalClassifier.available("original", models_dir / "missing")
    local = LocalClassifier("original", models_dir=models_dir)
    local.load()
    text = "have a nice day"
    result = vg.check_input(text, checks=[Toxicity(threshold=1.0, backend=local)], timeout=10)
    expected = Scorer(toxicity).score([ScoreItem(text, False)])[0].toxicity
    assert result.decisions[0].score == pytest.approx(expected, abs=1e-5)


def test_remote_endpoint_must_be_http() -> None:
    with pytest.raises(ValueError, match="must be an http"):
        RemoteClassifier(endpoint="localhost:4318")
