"""A live collector for the end-to-end tests: the real app under uvicorn, in a thread, on a free port.

It stores into the session's embedded ClickHouse folder (in a database of its own), so it can share this
pytest process; applications that send to it run as subprocesses (``sdk_client.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from veil_collector.app import create_app
from veil_collector.config import Settings
from veil_collector.demo.runner import free_port
from veil_collector.store import Store

SDK_CLIENT = Path(__file__).with_name("sdk_client.py")
ADMIN_TOKEN = "e2e-admin-token"


@dataclass(frozen=True)
class LiveCollector:
    base_url: str
    store: Store

    def run_app(self, api_key: str, label: str) -> dict:
        """Run ``sdk_client.py`` against this collector; returns its JSON report."""
        result = subprocess.run(
            [sys.executable, str(SDK_CLIENT), f"{self.base_url}/v1/traces", api_key, label],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def collector(chdb_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCollector]:
    settings = Settings(
        clickhouse_dsn=chdb_dsn,
        database=f"e2e_{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path_factory.mktemp("collector"),
        port=free_port(),
        drain_interval_s=0.1,
        pii_ner_enabled=False,  # the pattern scrub still runs; NER model loading is the demo test's job
        admin_token=ADMIN_TOKEN,
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="e2e-collector", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the collector did not start"
        time.sleep(0.05)
    base_url = f"http://127.0.0.1:{settings.port}"
    assert httpx.get(f"{base_url}/readyz", timeout=10).status_code == 200
    try:
        yield LiveCollector(base_url=base_url, store=app.state.store)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        cleanup = Store(chdb_dsn, database=settings.database)
        cleanup.command(f"DROP DATABASE IF EXISTS `{settings.database}`")
        cleanup.close()
