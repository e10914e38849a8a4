"""Versioned schema migrations, applied in order and recorded in ``schema_migrations``.

Each ``migrations/NNNN_name.sql`` file holds statements separated by ``;`` at the end of a line, with
``${TTL_DAYS}`` substituted from the settings. A migration is recorded only once all its statements ran;
statements are idempotent (``IF NOT EXISTS``), so a crash half-way is repaired by running it again.

On a cluster (``cluster=NAME``, ``veil migrate --cluster NAME``) every statement runs ``ON CLUSTER``
(:mod:`veil_collector.store.cluster`) and returns only once every server ran it, and ``schema_migrations``
is itself one table replicated to every server of every shard. Whichever server a later run, or a
collector, talks to therefore reads the same applied set, and the record survives the loss of the server
it was written through. A run that applied something ends with ``SYSTEM SYNC REPLICA ON CLUSTER``, so that
once it returns each server already holds every record. A store whose ``schema_migrations`` is replicated
holds a cluster schema: migrating it without a cluster name raises :class:`MigrationError` rather than
create single-server tables on one server.

Concurrent appliers (two collectors starting at once, a collector beside ``veil migrate``) take no lock.
Both may find a version pending and both run its statements: ``IF NOT EXISTS`` makes the later one a no-op
(ClickHouse serializes DDL on one table name; on a cluster each server runs the DDL queue's tasks one at a
time) and both record the version, the duplicate collapsing in the ReplacingMergeTree (reads use ``FINAL``
and a set). Migrations must therefore stay idempotent: a statement that is not (an ``ALTER`` without
``IF [NOT] EXISTS``, a data backfill) would run twice.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from veil_collector.store.client import Store
from veil_collector.store.cluster import (
    check_cluster_name,
    render_cluster_statements,
    render_table_on_every_server,
)

MIGRATIONS_PACKAGE = "veil_collector.store.migrations"

MIGRATIONS_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (Version UInt32, Name String, AppliedAt DateTime64(3)) "
    "ENGINE = ReplacingMergeTree ORDER BY Version"
)
# The same on a cluster: schema_migrations is there the replicated table itself, so a row written through
# one server reaches every server.
RECORD_MIGRATION = (
    "INSERT INTO schema_migrations (Version, Name, AppliedAt) VALUES ({v:UInt32}, {n:String}, now64(3))"
)

# An ON CLUSTER statement returns once every server ran it and raises if one failed or timed out (the
# server default, made explicit because a version is recorded only after all its statements returned).
_ON_CLUSTER_SETTINGS = {"distributed_ddl_output_mode": "throw"}


class MigrationError(RuntimeError):
    """The store's bookkeeping does not fit the requested kind of migration (cluster or single server)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One ``migrations/NNNN_name.sql`` file."""

    version: int
    name: str
    sql: str

    def statements(self, *, ttl_days: int, cluster: str | None = None) -> list[str]:
        """The statements to run, in order: for one server, or rendered for ``cluster``.

        Raises:
            ValueError: ``cluster`` is not a plain identifier.
        """
        rendered = string.Template(self.sql).substitute(TTL_DAYS=int(ttl_days))
        statements = [stmt.strip() for stmt in rendered.split(";\n") if _has_code(stmt)]
        return statements if cluster is None else render_cluster_statements(statements, cluster)


def _has_code(stmt: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in stmt.splitlines())


def load_migrations() -> list[Migration]:
    """Every migration shipped in :data:`MIGRATIONS_PACKAGE`, by version."""
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrations_table_statement(cluster: str | None = None) -> str:
    """The ``CREATE TABLE`` of ``schema_migrations``: local, or replicated to every server of ``cluster``."""
    return (
        MIGRATIONS_TABLE_DDL
        if cluster is None
        else render_table_on_every_server(MIGRATIONS_TABLE_DDL, cluster)
    )


def sync_statement(cluster: str) -> str:
    """The statement that waits until every server of ``cluster`` has fetched every bookkeeping row."""
    check_cluster_name(cluster)
    return f"SYSTEM SYNC REPLICA ON CLUSTER {cluster} schema_migrations"


def unreplicated_servers_query(cluster: str) -> str:
    """A query for the servers of ``cluster`` whose ``schema_migrations`` is a local, unreplicated table.

    Takes the database as the ``{db:String}`` parameter; returns one ``hostName()`` per such server.
    """
    check_cluster_name(cluster)
    return (
        f"SELECT hostName() FROM clusterAllReplicas({cluster}, system.tables) "
        "WHERE database = {db:String} AND name = 'schema_migrations' AND NOT startsWith(engine, 'Replicated')"
    )


def applied_versions(store: Store, *, cluster: str | None = None) -> set[int]:
    """The versions recorded in ``schema_migrations``, creating the table when missing.

    Args:
        store: the database to read.
        cluster: create the table replicated to every server of this cluster.

    Raises:
        MigrationError: with ``cluster``, a server holds an unreplicated ``schema_migrations`` (written by a
            single-server migration), whose records the rest of the cluster would not see.
    """
    store.command(migrations_table_statement(cluster), **_ddl_options(cluster))
    if cluster is not None:
        servers = [
            row[0]
            for row in store.query(
                unreplicated_servers_query(cluster), parameters={"db": store.database}
            ).result_rows
        ]
        if servers:
            raise MigrationError(
                f"schema_migrations on {', '.join(sorted(servers))} is not replicated: a single-server "
                "migration wrote it (a collector started without a cluster, or a Veil that recorded cluster "
                "migrations on one server only), and the other servers cannot see its records. Every "
                f"migration is idempotent: run `DROP TABLE IF EXISTS {store.database}.schema_migrations ON "
                f"CLUSTER {cluster} SYNC`, check that no single-server table (one without a _local twin) "
                "was created on those servers, and migrate again"
            )
    return {row[0] for row in store.query("SELECT Version FROM schema_migrations FINAL").result_rows}


def pending_migrations(store: Store, *, cluster: str | None = None) -> list[Migration]:
    """The migrations not recorded yet, in order (see :func:`applied_versions` for ``cluster``).

    Raises:
        MigrationError: without ``cluster``, migrations are pending on a cluster schema.
    """
    done = applied_versions(store, cluster=cluster)
    pending = [m for m in load_migrations() if m.version not in done]
    if pending and cluster is None and _holds_cluster_schema(store):
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise MigrationError(
            f"database {store.database} holds a schema migrated for a ClickHouse cluster, where {names} "
            "must still be applied: run `veil migrate --cluster NAME` (migrating without the cluster would "
            "create single-server tables on one server)"
        )
    return pending


def apply_migrations(
    store: Store,
    migrations: Sequence[Migration],
    *,
    ttl_days: int = 30,
    cluster: str | None = None,
    on_migration: Callable[[Migration], None] | None = None,
) -> None:
    """Run ``migrations`` in order, recording each one once all its statements returned.

    Args:
        store: the database to migrate.
        migrations: what :func:`pending_migrations` returned.
        ttl_days: every table's TTL.
        cluster: run each statement ``ON CLUSTER`` this cluster.
        on_migration: called after each migration is recorded.
    """
    for migration in migrations:
        for statement in migration.statements(ttl_days=ttl_days, cluster=cluster):
            store.command(statement, **_ddl_options(cluster))
        store.command(RECORD_MIGRATION, parameters={"v": migration.version, "n": migration.name})
        if on_migration is not None:
            on_migration(migration)
    if cluster is not None and migrations:
        store.command(sync_statement(cluster), **_ddl_options(cluster))


def migrate(
    store: Store,
    *,
    ttl_days: int = 30,
    cluster: str | None = None,
    on_migration: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Apply every migration not yet applied; returns those applied now.

    Args:
        store: the database to migrate.
        ttl_days: every table's TTL.
        cluster: migrate a ClickHouse cluster of this name (see the module docstring); None for one server.
        on_migration: called after each migration is recorded.

    Raises:
        MigrationError: the bookkeeping belongs to the other kind of deployment (see
            :func:`applied_versions` and :func:`pending_migrations`).
    """
    pending = pending_migrations(store, cluster=cluster)
    apply_migrations(store, pending, ttl_days=ttl_days, cluster=cluster, on_migration=on_migration)
    return pending


def _ddl_options(cluster: str | None) -> dict[str, Any]:
    return {"settings": _ON_CLUSTER_SETTINGS} if cluster is not None else {}


def _holds_cluster_schema(store: Store) -> bool:
    rows = store.query(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'schema_migrations'",
        parameters={"db": store.database},
    ).result_rows
    return bool(rows) and rows[0][0].startswith("Replicated")
