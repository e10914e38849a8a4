"""Loading what ``veil grafana push`` uploads from the provisioning files, and reaching Grafana's API."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from veil_collector.grafana.assets import expand_env, load_assets
from veil_collector.grafana.cli import connect

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
VALUES = {
    "CLICKHOUSE_HOST": "ch",
    "CLICKHOUSE_USER": "grafana",
    "CLICKHOUSE_PASSWORD": "p#ss: {x}",
    "CLICKHOUSE_DATABASE": "veil",
}


def test_assets_come_from_the_provisioning_files() -> None:
    assets = load_assets(DASHBOARDS, VALUES)
    assert (assets.folder_uid, assets.folder_title) == ("veil", "Veil")
    assert assets.datasource["jsonData"]["host"] == "ch"
    # Values are substituted after parsing: YAML-significant characters stay inside the value.
    assert assets.datasource["secureJsonData"] == {"password": "p#ss: {x}"}
    assert len(assets.dashboards) == len(list((DASHBOARDS / "json").glob("*.json")))


def test_a_missing_value_is_named() -> None:
    values = {k: v for k, v in VALUES.items() if k != "CLICKHOUSE_HOST"}
    with pytest.raises(ValueError, match="no value for CLICKHOUSE_HOST"):
        load_assets(DASHBOARDS, values)


def test_expand_env_accepts_both_grafana_forms() -> None:
    assert expand_env("$A and ${B}!", {"A": "1", "B": "2"}) == "1 and 2!"


def test_a_dashboard_without_uid_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "dashboards"
    shutil.copytree(DASHBOARDS / "provisioning", copy / "provisioning")
    (copy / "json").mkdir()
    (copy / "json" / "x.json").write_text('{"title": "no uid"}')
    with pytest.raises(ValueError, match="has no uid"):
        load_assets(copy, VALUES)


@pytest.mark.parametrize(
    ("url", "api"),
    [
        ("http://grafana:3000", "http://grafana:3000/api"),
        ("https://example.com/grafana", "https://example.com/grafana/api"),
        ("https://example.com/grafana/", "https://example.com/grafana/api"),
    ],
)
def test_connect_keeps_a_path_prefix(url: str, api: str) -> None:
    assert connect(url, "token", 5.0).client.url == api
