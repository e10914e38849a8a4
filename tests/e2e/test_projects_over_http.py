"""``veil projects create --url``: a project created through a running collector, whose key then works."""

from __future__ import annotations

import httpx
from conftest import ADMIN_TOKEN, LiveCollector
from typer.testing import CliRunner

from veil_collector.cli import app

runner = CliRunner()


def test_the_printed_key_opens_the_new_project(collector: LiveCollector) -> None:
    result = runner.invoke(
        app, ["projects", "create", "via-http", "--url", collector.base_url, "--admin-token", ADMIN_TOKEN]
    )
    assert result.exit_code == 0, result.output
    [key] = [word for word in result.output.split() if word.startswith("veil_")]
    response = httpx.get(f"{collector.base_url}/api/traces", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.json()["traces"] == []  # a new project sees nothing of the others


def test_a_wrong_or_missing_admin_token_is_refused(collector: LiveCollector) -> None:
    wrong = runner.invoke(
        app, ["projects", "create", "x", "--url", collector.base_url, "--admin-token", "nope"]
    )
    assert wrong.exit_code == 1
    assert "HTTP 401" in wrong.output and "Traceback" not in wrong.output
    missing = runner.invoke(
        app, ["projects", "create", "x", "--url", collector.base_url], env={"VEIL_ADMIN_TOKEN": ""}
    )
    assert missing.exit_code == 1
    assert "admin token" in missing.output
    unreachable = runner.invoke(
        app, ["projects", "create", "x", "--url", "http://127.0.0.1:9", "--admin-token", ADMIN_TOKEN]
    )
    assert unreachable.exit_code == 1
    assert "cannot reach the collector" in unreachable.output
