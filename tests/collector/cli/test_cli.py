"""The ``veil`` command line, run in-process (Typer's runner) and, for the server, as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from veil_collector.auth import resolve_api_key
from veil_collector.cli import app
from veil_collector.demo.runner import free_port
from veil_collector.store import Store

runner = CliRunner()


@pytest.fixture
def database(chdb_dsn: str) -> Iterator[str]:
    """A fresh database name in the session's embedded ClickHouse, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    store = Store(chdb_dsn, database=name)
    store.command(f"DROP DATABASE IF EXISTS `{name}`")
    store.close()


def test_help_explains_every_command_and_option() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("collector", "migrate", "projects", "demo"):
        assert command in result.output
    collector_help = runner.invoke(app, ["collector", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--host", "--port", "--dsn", "--spool-dir", "--no-auth", "--receiver-processes"):
        assert option in collector_help
    assert "Local use only" in collector_help
    assert "4318" in collector_help
    demo_help = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200"}).output
    assert "--serve" in demo_help and "--rounds" in demo_help


def test_migrate_applies_once_then_reports_up_to_date(chdb_dsn: str, database: str) -> None:
    env = {"VEIL_DATABASE": database}
    first = runner.invoke(app, ["migrate", "--dsn", chdb_dsn], env=env)
    assert first.exit_code == 0, first.output
    assert "Applied" in first.output and "0001_traces" in first.output
    second = runner.invoke(app, ["migrate", "--dsn", chdb_dsn], env=env)
    assert second.exit_code == 0
    assert "up to date" in second.output
    store = Store(chdb_dsn, database=database)
    tables = {row[0] for row in store.query("SHOW TABLES").result_rows}
    assert {"otel_traces", "llm_calls", "evaluations", "pii_findings"} <= tables


def test_migrate_print_makes_no_connection() -> None:
    # Port 9 (discard) refuses connections: printing must not try one.
    result = runner.invoke(app, ["migrate", "--print", "--dsn", "http://127.0.0.1:9"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE IF NOT EXISTS otel_traces" in result.output
    assert "TTL toDateTime(Timestamp) + toIntervalDay(30)" in result.output


def test_migrate_print_for_a_cluster() -> None:
    result = runner.invoke(app, ["migrate", "--print", "--cluster", "prod"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "ON CLUSTER" in result.output and "prod" in result.output
    assert "Replicated" in result.output


def test_migrate_for_a_cluster_the_server_lacks_fails_and_records_nothing(
    chdb_dsn: str, database: str
) -> None:
    # Embedded ClickHouse has no cluster: the first ON CLUSTER statement (the bookkeeping table's) fails.
    result = runner.invoke(
        app, ["migrate", "--dsn", chdb_dsn, "--cluster", "veil"], env={"VEIL_DATABASE": database}
    )
    assert result.exit_code == 1
    assert "migration failed" in result.output and "veil" in result.output
    store = Store(chdb_dsn, database=database)
    assert store.query("SHOW TABLES").result_rows == []
    store.close()


def test_projects_create_prints_a_working_key_once(chdb_dsn: str, database: str) -> None:
    result = runner.invoke(
        app, ["projects", "create", "shop"], env={"VEIL_DATABASE": database, "VEIL_CLICKHOUSE_DSN": chdb_dsn}
    )
    assert result.exit_code == 0, result.output
    [key] = [word for word in result.output.split() if word.startswith("veil_")]
    assert "shown only this once" in result.output
    project_id = resolve_api_key(Store(chdb_dsn, database=database), key)
    assert project_id is not None and project_id in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["projects", "create", "   "], "project name"),
        (["migrate", "--dsn", "postgres://db"], "invalid settings: clickhouse_dsn"),
        (["collector", "--dsn", "chdb://"], "invalid settings: clickhouse_dsn"),
        (["collector", "--port", "70000"], "invalid settings: port"),
        (["migrate", "--print", "--cluster", "prod; DROP"], "cluster name must be a plain identifier"),
    ],
)
def test_bad_input_ends_with_one_red_error_line(
    chdb_dsn: str, database: str, args: list[str], message: str
) -> None:
    result = runner.invoke(app, args, env={"VEIL_DATABASE": database, "VEIL_CLICKHOUSE_DSN": chdb_dsn})
    assert result.exit_code == 1
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_collector_no_auth_warns_loudly_and_serves(tmp_path: Path) -> None:
    """A real ``veil collector --no-auth`` process (its own embedded ClickHouse folder), stopped by SIGINT."""
    port = free_port()
    env = {**os.environ, "VEIL_DATA_DIR": str(tmp_path), "VEIL_PII_NER_ENABLED": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "veil_collector", "collector", "--port", str(port), "--no-auth"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert process.poll() is None, process.communicate()
        # No key needed: the default project answers.
        assert httpx.get(f"http://127.0.0.1:{port}/api/stats", timeout=10).status_code == 200
        # The collector holds its embedded folder: another process is told why it cannot open it.
        busy = subprocess.run(
            [sys.executable, "-m", "veil_collector", "projects", "create", "x", "--dsn",
             f"chdb://{tmp_path / 'clickhouse'}"],
            capture_output=True, text=True, timeout=60, env={**env, "COLUMNS": "200"}, check=False,
        )  # fmt: skip
        assert busy.returncode == 1
        assert "one process only" in busy.stderr and "--url" in busy.stderr
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert "Authentication is OFF" in err.decode()
    assert process.returncode == 0
    assert (tmp_path / "clickhouse").is_dir()
