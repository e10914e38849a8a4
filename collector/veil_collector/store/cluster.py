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
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS\s+`?(\w+)`?\s*\(", re.IGNORECASE)
_CREATE_VIEW = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS\s+`?(\w+)`?\s+TO\s+`?(\w+)`?\s+AS\s+", re.IGNORECASE
)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*MergeTree)[ \t]*(?:\(([^)]*)\))?", re.IGNORECASE)
_FROM = re.compile(r"\bFROM\s+`?(\w+)`?", re.IGNORECASE)
_ORDER_BY = re.compile(r"\bORDER BY\s*\(?\s*`?(\w+)", re.IGNORECASE)
_CLUSTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LOCAL_SUFFIX = "_local"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
    if not _CLUSTER_NAME.match(cluster):
        raise ValueError(f"cluster name must be a plain identifier; got {cluster!r}")
    rendered: list[str] = []
    for statement in statements:
        # Full-line comments carry the single-server explanations; they do not apply to the rewrite.
        code = [line for line in statement.splitlines() if not line.lstrip().startswith("--")]
        text = "\n".join(code).strip().rstrip(";")
        if table := _CREATE_TABLE.match(text):
            rendered.extend(_table(text, table, cluster))
        elif view := _CREATE_VIEW.match(text):
            rendered.append(_view(text, view, cluster))
        else:
            raise ValueError(f"cannot render this statement for a cluster: {text[:80]!r}")
    return rendered


def _table(text: str, header: re.Match[str], cluster: str) -> list[str]:
    name = header.group(1)
    engine = _ENGINE.search(text)
    if engine is None:
        raise ValueError(f"table {name} does not use a MergeTree engine")
    local = name + LOCAL_SUFFIX
    kind, arguments = engine.group(1), (engine.group(2) or "").strip()
    replicated_arguments = ", ".join(
        [_quote(f"/clickhouse/tables/{{shard}}/{{database}}/{local}"), _quote("{replica}")]
        + ([arguments] if arguments else [])
    )
    body = text[header.end() :]
    body = _ENGINE.sub(f"ENGINE = Replicated{kind}({replicated_arguments})", body, count=1)
    body = body.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
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
