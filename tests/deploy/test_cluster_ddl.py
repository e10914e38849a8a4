"""The schema step of the Kubernetes ClickHouse cluster example: every migration rendered for the
cluster that ``deploy/kubernetes/clickhouse`` defines parses with ClickHouse's own parser (``formatQuery``
on embedded ClickHouse), and targets that cluster."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from veil_collector.store import Store
from veil_collector.store.migrate import load_migrations

cluster_module = pytest.importorskip(
    "veil_collector.store.cluster", reason="cluster rendering not written yet"
)

CLUSTER_XML = Path(__file__).resolve().parents[2] / "deploy/kubernetes/clickhouse/config/cluster.xml"


def _cluster_name() -> str:
    (cluster,) = ET.parse(CLUSTER_XML).getroot().find("remote_servers")
    return cluster.tag


def test_every_rendered_statement_parses_and_targets_the_example_cluster(store: Store) -> None:
    cluster = _cluster_name()
    rendered = [
        statement
        for migration in load_migrations()
        for statement in cluster_module.render_cluster_statements(migration.statements(ttl_days=30), cluster)
    ]
    assert rendered
    for statement in rendered:
        formatted = store.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[0][
            0
        ]
        assert f"ON CLUSTER {cluster}" in formatted, formatted
    engines = " ".join(rendered)
    assert "ReplicatedMergeTree" in engines and f"Distributed({cluster}" in engines.replace("'", "")


def test_a_bad_statement_is_rejected_by_the_parser(store: Store) -> None:
    # The check above can fail: formatQuery raises on DDL ClickHouse cannot parse.
    with pytest.raises(Exception, match="Syntax error"):
        store.query("SELECT formatQuery({q:String})", parameters={"q": "CREATE TABLE t ON CLUSTER (x"})
