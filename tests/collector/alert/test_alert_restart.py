"""Restarting in the middle of retries: every notification arrives, each webhook-id processed once.

A real receiver fails while the first engine retries; the first engine is then stopped (or its process is
killed with SIGKILL); the receiver recovers and a new engine on the same ``data_dir`` delivers the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alert_receivers import SECRET, Receiver, wait_until

from veil_collector.alert import AlertEngine
from veil_collector.records import Evaluation

HERE = Path(__file__).parent
FAST = {"retry_schedule": (0.05,), "max_attempts": 1000, "http_timeout": 1.0, "tick": 0.05}


class Switch:
    """A receiver behaviour that answers 503 until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False

    def __call__(self, index: int, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], float]:
        return (200 if self.up else 503), {}, 0.0


def rules(url: str) -> str:
    return (
        "rules:\n  - id: toxic\n    name: Toxic output\n"
        "    event: {type: toxicity, threshold: 0.8, group_by: [model]}\n"
        f'    destinations: [{{name: ops, type: webhook, url: "{url}", secret: "{SECRET}"}}]\n'
    )


def toxic(model: str) -> Evaluation:
    now = datetime.now(tz=timezone.utc)
    return Evaluation(
        project_id="default", timestamp=now, evaluated_at=now, trace_id="a" * 32, span_id="b" * 16,
        service_name="chat", environment="prod", request_model=model, target="output", evaluator="toxicity",
        label="toxicity", score=0.99, model_name="m", model_version="1",
    )  # fmt: skip


def test_stop_mid_retry_then_restart_delivers_everything_once(
    receiver_factory: Callable[..., Receiver], settings_factory: Callable[..., Any], store: Any
) -> None:
    switch = Switch()
    receiver = receiver_factory(switch)
    settings = settings_factory(rules(receiver.url))
    first = AlertEngine(settings, store, **FAST)
    first.on_evaluations([toxic(f"model-{i}") for i in range(5)])
    expected = {note.id for note in first.evaluate()}
    first.start()
    receiver.wait_for(lambda r: len(r.requests) >= 15)  # every notification has failed a few times
    first.stop(timeout=5)
    assert first.outbox_counts() == {"pending": 5}

    switch.up = True
    second = AlertEngine(settings, store, **FAST)
    second.start()
    try:
        receiver.wait_for(lambda r: set(r.processed) == expected)
        assert second.evaluate() == []  # the alerts are still firing: nothing new to send
        wait_until(lambda: second.outbox_counts() == {"delivered": 5})
    finally:
        second.stop(timeout=5)
    assert all(count == 1 for count in receiver.processed.values()), receiver.processed
    assert {r.headers["webhook-id"] for r in receiver.requests} == expected  # no new ids after restart


def test_kill_9_mid_retry_then_restart_delivers_everything(
    receiver_factory: Callable[..., Receiver],
    settings_factory: Callable[..., Any],
    store: Any,
    tmp_path: Path,
) -> None:
    switch = Switch()
    receiver = receiver_factory(switch)
    settings = settings_factory(rules(receiver.url))
    command = [sys.executable, str(HERE / "alert_worker.py"), str(settings.data_dir)]
    command += [str(settings.alert_rules_file), str(tmp_path / "worker-clickhouse"), "5"]
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        expected = set(json.loads(worker.stdout.readline()))
        assert len(expected) == 5
        receiver.wait_for(lambda r: len(r.requests) >= 15, timeout=60)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        worker.stdout.close()

    switch.up = True
    engine = AlertEngine(settings, store, **FAST)
    engine.start()
    try:
        receiver.wait_for(lambda r: set(r.processed) == expected)
        wait_until(lambda: engine.outbox_counts() == {"delivered": 5})
    finally:
        engine.stop(timeout=5)
    # At-least-once: a kill between the receiver's 2xx and our commit could repeat a message, but only
    # ever under its own webhook-id, which the receiver deduplicates.
    assert {r.headers["webhook-id"] for r in receiver.requests} == expected
