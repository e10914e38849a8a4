"""One ClickHouse client for the whole process, embedded (chDB) or remote, chosen by DSN.

``chdb:///path/to/dir`` opens the embedded engine in that folder; ``http(s)://user:pass@host:8123/db``
reaches a ClickHouse server. Code above this module never knows which. chDB allows one engine path per
process, and its connection handle is not meant to be driven from several threads at once, so calls on an
embedded store are serialized with a lock; the HTTP client is thread-safe and is not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.query import QueryResult

DEFAULT_DATABASE = "veil"


class StoreUnavailable(RuntimeError):
    """ClickHouse could not be reached or refused the statement for a transient reason."""


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def _embedded_path(dsn: str) -> Path:
    path = dsn[len("chdb://") :] if dsn.startswith("chdb://") else dsn[len("chdb:") :]
    if not path or path == ":memory:":
        raise ValueError(f"embedded ClickHouse needs a folder, e.g. chdb:///var/lib/veil; got {dsn!r}")
    return Path(path)


class Store:
    """A ClickHouse client bound to one database.

    Args:
        dsn: ``chdb:///folder`` (embedded) or ``http(s)://user:password@host:port[/database]``.
        database: the database every unqualified table name refers to; created when missing.
        connect_timeout: seconds to wait for a server connection (HTTP only).
    """

    def __init__(self, dsn: str, *, database: str = DEFAULT_DATABASE, connect_timeout: float = 10.0) -> None:
        self.dsn = dsn
        self.database = database
        self.embedded = is_embedded(dsn)
        self._lock: threading.Lock | None = threading.Lock() if self.embedded else None
        try:
            if self.embedded:
                path = _embedded_path(dsn)
                path.mkdir(parents=True, exist_ok=True)
                bootstrap = clickhouse_connect.get_client(dsn=f"chdb://{path}")
                bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
                self._client: Client = clickhouse_connect.get_client(dsn=f"chdb://{path}", database=database)
                bootstrap.close()
            else:
                parts = urlsplit(dsn)
                if parts.scheme not in ("http", "https"):
                    raise ValueError(f"unsupported ClickHouse DSN scheme {parts.scheme!r} in {dsn!r}")
                bootstrap = clickhouse_connect.get_client(dsn=dsn, connect_timeout=connect_timeout)
                bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
                bootstrap.close()
                self._client = clickhouse_connect.get_client(
                    dsn=dsn, database=database, connect_timeout=connect_timeout
                )
        except ClickHouseError as exc:
            raise StoreUnavailable(f"cannot open ClickHouse at {redact_dsn(dsn)}: {exc}") from exc

    @contextmanager
    def _serialized(self) -> Iterator[None]:
        with self._lock if self._lock is not None else nullcontext():
            yield

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None, **kwargs: Any) -> QueryResult:
        """Run a SELECT; ``{name:Type}`` placeholders are bound server-side from ``parameters``."""
        with self._serialized():
            return self._client.query(sql, parameters=parameters, **kwargs)

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a statement that returns no rows (DDL, ALTER, ...)."""
        with self._serialized():
            return self._client.command(sql, parameters=parameters, **kwargs)

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert rows in one block. Pass ``insert_deduplication_token`` in ``settings`` for replays."""
        if not rows:
            return
        with self._serialized():
            self._client.insert(table, rows, column_names=list(column_names), settings=dict(settings or {}))

    def insert_native(
        self,
        table: str,
        blocks: Iterable[bytes],
        column_names: Sequence[str],
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert ready-made Native blocks (``store.native``) in one statement.

        ClickHouse squashes the blocks of one insert into one part (up to ``min_insert_block_size_*``),
        so a batch of many blocks is stored and deduplicated like one.
        """
        with self._serialized():
            self._client.raw_insert(
                table, list(column_names), blocks, settings=dict(settings or {}), fmt="Native"
            )

    def column_types(self, table: str) -> dict[str, str]:
        """Column name -> ClickHouse type name of ``table``, as ``DESCRIBE TABLE`` gives them."""
        rows = self.query(f"DESCRIBE TABLE {table}").result_rows
        return {row[0]: row[1] for row in rows}

    def ping(self) -> bool:
        try:
            with self._serialized():
                return bool(self._client.ping())
        except Exception:  # a health probe reports, it never raises
            return False

    def close(self) -> None:
        with self._serialized():
            self._client.close()


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for logs and error messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
