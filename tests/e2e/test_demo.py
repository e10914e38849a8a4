"""``veil demo`` end to end, as a user runs it: its own collector subprocess, the demo app, the summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_veil_demo_runs_end_to_end_and_reports_through_the_api(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "140", "NO_COLOR": "1"}
    env.pop("VEIL_DATA_DIR", None)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "veil_collector", "demo", "--no-serve", "--rounds", "1", "--timeout", "150",
         "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=cwd,
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "All spans stored and queryable" in output
    exported = int(re.search(r"the SDK exported (\d+) spans", output).group(1))
    assert exported > 8
    # The summary is what the query API returned: every exported span, every scenario's trace.
    assert re.search(rf"Spans\s+{exported} \(", output)
    assert re.search(r"Traces\s+8\b", output)
    assert re.search(r"Model calls\s+11 \(1 failed\)", output)
    for model in ("gpt-4o", "gpt-4o-mini", "claude-3-5-haiku", "mistral-small", "text-embedding-3-small"):
        assert model in output
    assert "no price" in output  # the local model has no list price: its cost is unknown, not 0
    pii = int(re.search(r"PII findings\s+(\d+)", output).group(1))
    assert pii > 0
    assert re.search(r"p50 [\d.]+ ms, p95 [\d.]+ ms", output)
    # The abusive reply of the demo's local model is caught by the output classifier.
    flagged = re.search(r"Classifiers\s+toxicity/\w+: (\d+) of (\d+) texts flagged", output)
    assert flagged is not None and int(flagged.group(1)) >= 1
    assert "/api/traces" in output and "/docs" in output
    # The collector used the folder it was given, and stopped.
    assert (tmp_path / "clickhouse").is_dir()
    assert "Authentication is OFF" in (tmp_path / "collector.log").read_text()
    assert (tmp_path / "alerts.db").is_file() and (tmp_path / "pii_placeholder.key").is_file()
    assert list(cwd.iterdir()) == []  # nothing left in the folder the demo ran from
