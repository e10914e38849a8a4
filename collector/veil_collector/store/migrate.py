"""Versioned schema migrations, applied in order and recorded in ``schema_migrations``.

Each ``migrations/NNNN_name.sql`` file holds statements separated by ``;`` at the end of a line, with
``${TTL_DAYS}`` substituted from the settings. A migration is recorded only once all its statements ran;
statements are idempotent (``IF NOT EXISTS``), so a crash half-way is repaired by running it again.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from veil_collector.store.client import Store

MIGRATIONS_PACKAGE = "veil_collector.store.migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self, *, ttl_days: int) -> list[str]:
        rendered = string.Template(self.sql).substitute(TTL_DAYS=int(ttl_days))
        return [stmt.strip() for stmt in rendered.split(";\n") if _has_code(stmt)]


def _has_code(stmt: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in stmt.splitlines())


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def applied_versions(store: Store) -> set[int]:
    store.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (Version UInt32, Name String, AppliedAt DateTime64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY Version"
    )
    return {row[0] for row in store.query("SELECT Version FROM schema_migrations FINAL").result_rows}


def migrate(
    store: Store, *, ttl_days: int = 30, on_migration: Callable[[Migration], None] | None = None
) -> list[Migration]:
    """Apply every migration not yet applied; returns those applied now."""
    done = applied_versions(store)
    applied = []
    for migration in load_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements(ttl_days=ttl_days):
            store.command(statement)
        store.command(
            "INSERT INTO schema_migrations (Version, Name, AppliedAt) "
            "VALUES ({v:UInt32}, {n:String}, now64(3))",
            parameters={"v": migration.version, "n": migration.name},
        )
        applied.append(migration)
        if on_migration is not None:
            on_migration(migration)
    return applied
