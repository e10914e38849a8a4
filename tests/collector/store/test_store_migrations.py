"""Migrations on real embedded ClickHouse: what is recorded, what is skipped, and what happens when two
appliers run at once (see the concurrency notes in ``veil_collector.store.migrate``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from veil_collector.store import Store
from veil_collector.store.migrate import (
    Migration,
    apply_migrations,
    load_migrations,
    migrate,
    pending_migrations,
    unreplicated_servers_query,
)


@pytest.fixture
def empty_store(chdb_dsn: str) -> Iterator[Store]:
    """A database with nothing in it yet, private to one test."""
    db = Store(chdb_dsn, database=f"test_{uuid.uuid4().hex[:12]}")
    yield db
    db.command(f"DROP DATABASE IF EXISTS `{db.database}`")
    db.close()


def _recorded(store: Store) -> list[tuple[int, str]]:
    return [
        (int(v), n)
        for v, n in store.query(
            "SELECT Version, Name FROM schema_migrations FINAL ORDER BY Version"
        ).result_rows
    ]


def _tables(store: Store) -> dict[str, str]:
    rows = store.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = {db:String} "
        "AND name != 'schema_migrations'",
        parameters={"db": store.database},
    ).result_rows
    return dict(rows)


def test_each_migration_is_recorded_once_and_a_rerun_applies_nothing(store: Store) -> None:
    everything = [(m.version, m.name) for m in load_migrations()]
    assert _recorded(store) == everything
    engine = store.query(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'schema_migrations'",
        parameters={"db": store.database},
    ).result_rows
    assert engine == [("ReplacingMergeTree",)]  # one server: a local table, as before clusters existed

    assert pending_migrations(store) == []
    assert migrate(store) == []
    assert store.query("SELECT count() FROM schema_migrations").result_rows[0][0] == len(everything)


def test_only_the_versions_not_recorded_are_applied(empty_store: Store) -> None:
    migrations = load_migrations()
    assert pending_migrations(empty_store) == migrations
    apply_migrations(empty_store, migrations[:2])
    assert [m.version for m in pending_migrations(empty_store)] == [m.version for m in migrations[2:]]

    seen: list[Migration] = []
    applied = migrate(empty_store, on_migration=seen.append)

    assert applied == seen == migrations[2:]
    assert _recorded(empty_store) == [(m.version, m.name) for m in migrations]


def test_an_applier_that_found_everything_pending_reruns_it_harmlessly(store: Store) -> None:
    # What the slower of two appliers does: it read the applied set before the faster one recorded
    # anything, so it runs every statement again over the existing schema, then records each version again.
    store.command("INSERT INTO projects (ProjectId, Name) VALUES ('p1', 'shop')")
    before = _tables(store)

    apply_migrations(store, load_migrations())

    assert _tables(store) == before
    assert store.query("SELECT Name FROM projects WHERE ProjectId = 'p1'").result_rows == [("shop",)]
    assert _recorded(store) == [(m.version, m.name) for m in load_migrations()]


def test_two_appliers_at_once_both_finish_and_the_schema_is_migrated_once(
    empty_store: Store, store: Store
) -> None:
    # Both read the applied set (nothing) before either applies, then run every migration side by side:
    # their statements interleave on one database.
    both_read = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def applier() -> None:
        try:
            pending = pending_migrations(empty_store)
            both_read.wait()
            apply_migrations(empty_store, pending)
        except Exception as exc:  # a thread's exception would otherwise only be printed
            errors.append(exc)

    threads = [threading.Thread(target=applier) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert _recorded(empty_store) == [(m.version, m.name) for m in load_migrations()]
    assert _tables(empty_store).keys() == _tables(store).keys()
    assert pending_migrations(empty_store) == []


def test_the_cluster_check_for_unreplicated_bookkeeping_finds_a_single_server_table(store: Store) -> None:
    # clusterAllReplicas needs a cluster; the same filter over this server's own system.tables shows that it
    # picks out a single-server schema_migrations (the one `migrate --cluster` refuses to build on).
    query = unreplicated_servers_query("veil").replace(
        "clusterAllReplicas(veil, system.tables)", "system.tables"
    )
    assert query != unreplicated_servers_query("veil")
    hosts = store.query(query, parameters={"db": store.database}).result_rows
    assert len(hosts) == 1
    assert store.query(query, parameters={"db": "no_such_database"}).result_rows == []


def test_the_collectors_cluster_setting_is_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from veil_collector.config import Settings

    assert Settings().cluster is None
    monkeypatch.setenv("VEIL_CLUSTER", "veil")
    assert Settings().cluster == "veil"
    # Spliced into ON CLUSTER DDL unquoted: anything but a plain identifier is refused up front.
    monkeypatch.setenv("VEIL_CLUSTER", "veil; DROP TABLE x")
    with pytest.raises(ValueError, match="cluster name must be a plain identifier"):
        Settings()
