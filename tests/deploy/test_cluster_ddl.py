"""The schema step of the Kubernetes ClickHouse cluster example: every migration rendered for the
cluster that ``deploy/kubernetes/clickhouse`` defines parses with ClickHouse's own parser (``formatQuery``
on embedded ClickHouse), and targets that cluster."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from veil_collector.store import Store
from veil_collector.store.cluster import render_cluster_statements
from veil_collector.store.migrate import (
    MIGRATIONS_TABLE_DDL,
    RECORD_MIGRATION,
    load_migrations,
    migrations_table_statement,
    sync_statement,
    unreplicated_servers_query,
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
        for statement in render_cluster_statements(migration.statements(ttl_days=30), cluster)
    ]
    assert rendered
    for statement in rendered:
        formatted = store.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[0][
            0
        ]
        assert f"ON CLUSTER {cluster}" in formatted, formatted
    engines = " ".join(rendered)
    assert "ReplicatedMergeTree" in engines and f"Distributed({cluster}" in engines.replace("'", "")


def _format(store: Store, statement: str) -> str:
    return store.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[0][0]


def test_the_bookkeeping_is_one_table_replicated_to_every_server(store: Store) -> None:
    cluster = _cluster_name()
    formatted = _format(store, migrations_table_statement(cluster))

    assert formatted.startswith(f"CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER {cluster}\n")
    # One Keeper path for the whole cluster (no {shard}): every server of every shard holds every record.
    # Replica names must then be unique across shards, hence {shard}-{replica}.
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{database}/schema_migrations', "
        "'{shard}-{replica}')\nORDER BY Version"
    ) in formatted
    single = _format(store, MIGRATIONS_TABLE_DDL)
    assert formatted.split("ENGINE")[0].replace(f" ON CLUSTER {cluster}", "") == single.split("ENGINE")[0]
    assert migrations_table_statement() == MIGRATIONS_TABLE_DDL


def test_the_records_are_written_to_the_replicated_table_and_synced_everywhere(store: Store) -> None:
    cluster = _cluster_name()
    # No Distributed front and no _local twin: the INSERT lands in the replicated table on the server it
    # reaches, and replication carries the row to the others.
    assert "Distributed" not in migrations_table_statement(cluster)
    assert _format(store, RECORD_MIGRATION).startswith(
        "INSERT INTO schema_migrations (Version, Name, AppliedAt)"
    )
    assert (
        _format(store, sync_statement(cluster))
        == f"SYSTEM SYNC REPLICA ON CLUSTER {cluster} schema_migrations"
    )
    assert f"FROM clusterAllReplicas({cluster}, system.tables)" in _format(
        store, unreplicated_servers_query(cluster)
    )
    for bad in (sync_statement, unreplicated_servers_query, migrations_table_statement):
        with pytest.raises(ValueError, match="plain identifier"):
            bad("veil; DROP")


def test_a_bad_statement_is_rejected_by_the_parser(store: Store) -> None:
    # The check above can fail: formatQuery raises on DDL ClickHouse cannot parse.
    with pytest.raises(Exception, match="Syntax error"):
        store.query("SELECT formatQuery({q:String})", parameters={"q": "CREATE TABLE t ON CLUSTER (x"})
