"""The single-server schema rendered for a ClickHouse cluster.

Every ``CREATE TABLE name (...) ENGINE = XMergeTree(...)`` becomes two statements, both ``ON CLUSTER``:

* ``name_local`` with ``ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/name_local',
  '{replica}', ...)``: the data, replicated within a shard (``{shard}``/``{replica}`` are the servers'
  macros); ``non_replicated_deduplication_window`` becomes ``replicated_deduplication_window``, so
  replayed batches are still deduplicated;
* ``name`` with ``Distributed(cluster, currentDatabase(), name_local, key)``: what the collector inserts
  into and queries. Tables with a ``TraceId`` column are sharded by it, so a trace and its lookup row stay
  on one shard; ``ReplacingMergeTree`` tables by their first sorting column, so that versions of a row
  meet on one shard; the rest at random.

Materialized views read and write the local tables, on every shard.

A small table that every server needs in full (the migrations' bookkeeping) is rendered by
:func:`render_table_on_every_server` instead: one replicated table, no Distributed front.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS\s+`?(\w+)`?\s*\(", re.IGNORECASE)
_CREATE_VIEW = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS\s+`?(\w+)`?\s+TO\s+`?(\w+)`?\s+AS\s+", re.IGNORECASE
)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*MergeTree)(?:[ \t]*\(([^)]*)\))?", re.IGNORECASE)
_FROM = re.compile(r"\bFROM\s+`?(\w+)`?", re.IGNORECASE)
_ORDER_BY = re.compile(r"\bORDER BY\s*\(?\s*`?(\w+)", re.IGNORECASE)
_CLUSTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LOCAL_SUFFIX = "_local"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_cluster_name(cluster: str) -> None:
    """Refuse a cluster name that is not a plain identifier: it is spliced into DDL unquoted.

    Raises:
        ValueError: naming the bad value.
    """
    if not _CLUSTER_NAME.match(cluster):
        raise ValueError(f"cluster name must be a plain identifier; got {cluster!r}")


def render_cluster_statements(statements: Sequence[str], cluster: str) -> list[str]:
    """Rewrite single-server DDL for ``cluster`` (see the module docstring).

    Args:
        statements: ``CREATE TABLE IF NOT EXISTS`` (MergeTree family) and ``CREATE MATERIALIZED VIEW IF
            NOT EXISTS ... TO ...`` statements, as the migrations hold them.
        cluster: the cluster name from the servers' ``remote_servers`` configuration.

    Returns:
        The statements to run, in order.

    Raises:
        ValueError: the cluster name is not a plain identifier, or a statement is of another kind.
    """
    check_cluster_name(cluster)
    rendered: list[str] = []
    for statement in statements:
        text = _code(statement)
        if table := _CREATE_TABLE.match(text):
            rendered.extend(_table(text, table, cluster))
        elif view := _CREATE_VIEW.match(text):
            rendered.append(_view(text, view, cluster))
        else:
            raise ValueError(f"cannot render this statement for a cluster: {text[:80]!r}")
    return rendered


def render_table_on_every_server(statement: str, cluster: str) -> str:
    """Rewrite a single-server ``CREATE TABLE`` for a small table that every server holds in full.

    The table is created ``ON CLUSTER`` under its own name with the Replicated variant of its engine at one
    Keeper path for the whole cluster (``/clickhouse/tables/{database}/name``, no ``{shard}``): every
    server of every shard is a replica of it, so a row written through any server reaches all of them and
    each server answers reads from its own copy. Replica names are ``{shard}-{replica}``, unique even where
    the ``replica`` macro repeats across shards.

    Args:
        statement: one ``CREATE TABLE IF NOT EXISTS`` statement with a MergeTree-family engine.
        cluster: the cluster name from the servers' ``remote_servers`` configuration.

    Raises:
        ValueError: the cluster name is not a plain identifier, or the statement is of another kind.
    """
    check_cluster_name(cluster)
    text = _code(statement)
    header = _CREATE_TABLE.match(text)
    if header is None:
        raise ValueError(f"not a CREATE TABLE statement: {text[:80]!r}")
    name = header.group(1)
    body, _ = _replicated(
        text[header.end() :], name, f"/clickhouse/tables/{{database}}/{name}", "{shard}-{replica}"
    )
    return f"CREATE TABLE IF NOT EXISTS {name} ON CLUSTER {cluster} (" + body


def _code(statement: str) -> str:
    # Full-line comments carry the single-server explanations; they do not apply to the rewrite.
    code = [line for line in statement.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(code).strip().rstrip(";")


def _replicated(body: str, name: str, path: str, replica: str) -> tuple[str, str]:
    """``body`` with its MergeTree engine made Replicated at Keeper ``path``, and the engine's kind."""
    engine = _ENGINE.search(body)
    if engine is None:
        raise ValueError(f"table {name} does not use a MergeTree engine")
    kind, arguments = engine.group(1), (engine.group(2) or "").strip()
    replicated_arguments = ", ".join([_quote(path), _quote(replica)] + ([arguments] if arguments else []))
    body = _ENGINE.sub(f"ENGINE = Replicated{kind}({replicated_arguments})", body, count=1)
    # Replayed inserts stay deduplicated under the replicated engine's own setting.
    return body.replace("non_replicated_deduplication_window", "replicated_deduplication_window"), kind


def _table(text: str, header: re.Match[str], cluster: str) -> list[str]:
    name = header.group(1)
    local = name + LOCAL_SUFFIX
    body, kind = _replicated(
        text[header.end() :], name, f"/clickhouse/tables/{{shard}}/{{database}}/{local}", "{replica}"
    )
    create_local = f"CREATE TABLE IF NOT EXISTS {local} ON CLUSTER {cluster} (" + body
    if re.search(r"^\s*TraceId\s", text, re.MULTILINE):
        key = "cityHash64(TraceId)"
    elif kind.lower() == "replacingmergetree" and (order := _ORDER_BY.search(text)):
        key = f"cityHash64({order.group(1)})"
    else:
        key = "rand()"
    create_distributed = (
        f"CREATE TABLE IF NOT EXISTS {name} ON CLUSTER {cluster} AS {local} "
        f"ENGINE = Distributed({cluster}, currentDatabase(), {local}, {key})"
    )
    return [create_local, create_distributed]


def _view(text: str, header: re.Match[str], cluster: str) -> str:
    name, target = header.group(1), header.group(2)
    select = text[header.end() :]
    select = _FROM.sub(lambda m: f"FROM {m.group(1)}{LOCAL_SUFFIX}", select, count=1)
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} ON CLUSTER {cluster} "
        f"TO {target}{LOCAL_SUFFIX} AS {select}"
    )
