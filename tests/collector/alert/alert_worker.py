"""A collector stand-in for the hard-kill test: fires alerts, prints their ids, then delivers until killed.

Usage: ``python alert_worker.py DATA_DIR RULES_FILE CLICKHOUSE_DIR COUNT``. Runs in its own process (its
own chDB folder); the test kills it with SIGKILL in the middle of the retries.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from veil_collector.alert import AlertEngine
from veil_collector.config import Settings
from veil_collector.records import Evaluation
from veil_collector.store import Store
from veil_collector.store.migrate import migrate


def toxic(now: datetime, model: str) -> Evaluation:
    return Evaluation(
        project_id="default", timestamp=now, evaluated_at=now, trace_id="a" * 32, span_id="b" * 16,
        service_name="chat", environment="prod", request_model=model, target="output", evaluator="toxicity",
        label="toxicity", score=0.99, model_name="m", model_version="1",
    )  # fmt: skip


def main() -> None:
    data_dir, rules_file, clickhouse_dir, count = sys.argv[1:5]
    store = Store(f"chdb://{clickhouse_dir}", database="worker")
    migrate(store)
    settings = Settings(data_dir=Path(data_dir), alert_rules_file=Path(rules_file))
    engine = AlertEngine(settings, store, retry_schedule=(0.05,), max_attempts=1000, http_timeout=1.0)
    now = datetime.now(tz=timezone.utc)
    engine.on_evaluations([toxic(now, f"model-{i}") for i in range(int(count))])
    notes = engine.evaluate()
    print(json.dumps([n.id for n in notes]), flush=True)
    engine.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
