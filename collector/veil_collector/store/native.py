"""One request's rows as ClickHouse Native column data, and a drain batch of them as insert blocks.

Flattening a request and serializing its rows take about 30 µs per span of Python, and the process that
inserts (the server, which also runs chDB) is the one that has no core to spare. :class:`RequestEncoder`
therefore does both where the request is decoded anyway, in a receiver worker process, and hands back
bytes; the drain only adds what it alone knows and concatenates.

A Native block is ``column count | row count | (name | type | data)`` per column (LEB128 counts and
lengths). Each column's section stands on its own, so the encoder writes every column but ``VeilBatch``
(the drain batch's first spool seq, known only once the drain cuts a batch), and :meth:`RequestEncoder.blocks`
adds the block header and that constant column. A batch is inserted as one block per request and table in
one statement per table; ClickHouse squashes them into one part as it did the single block before.

Encoding is deterministic (same request, same bytes), so a batch replayed after a restart, encoded in the
drain from the spooled request, carries exactly the rows that the workers' encoding did.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.common import write_leb128
from clickhouse_connect.driver.insert import InsertContext
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from veil_collector.records import GenAICall, GuardDecision, PiiFinding
from veil_collector.store.client import Store
from veil_collector.store.flatten import FlatBatch, Flattener

BATCH_COLUMN = "VeilBatch"
_BATCH_TYPE = "UInt64"


@dataclass(frozen=True, slots=True)
class EncodedTable:
    """One request's rows of one table: the column sections of a Native block, ``VeilBatch`` left out."""

    rows: int
    columns: bytes


@dataclass(frozen=True, slots=True)
class EncodedRequest:
    """What one request writes: encoded rows per table, and the records the pipeline's listeners get.

    The records' ``veil_batch`` is 0: the drain sets it when it hands a stored batch on.
    """

    tables: Mapping[str, EncodedTable]
    pii_findings: Sequence[PiiFinding] = field(default_factory=tuple)
    guard_decisions: Sequence[GuardDecision] = field(default_factory=tuple)
    calls: Sequence[GenAICall] = field(default_factory=tuple)

    @property
    def nbytes(self) -> int:
        """Bytes of encoded rows held (the records are small next to them)."""
        return sum(len(table.columns) for table in self.tables.values())


class RequestEncoder:
    """Flattens a request (:class:`~veil_collector.store.flatten.Flattener`) and encodes its rows.

    Picklable: the server builds it once and the receiver's worker processes get a copy.

    Args:
        flattener: turns a request into rows (prices and PII findings included).
        column_types: table -> column -> ClickHouse type name, as ``DESCRIBE TABLE`` gives them
            (:meth:`for_store`); every column that :class:`FlatBatch` writes must be there.
        calls: also return the :class:`GenAICall` records (a fifth of the flatten's CPU); only
            the classifier stage reads them.
    """

    def __init__(
        self, flattener: Flattener, column_types: Mapping[str, Mapping[str, str]], calls: bool = True
    ) -> None:
        self._flattener = flattener
        self._column_types = {table: dict(types) for table, types in column_types.items()}
        self._calls = calls
        self._tables: dict[str, tuple[tuple[str, ...], list[tuple[bytes, Any]]]] = {}
        for table, columns, _ in FlatBatch().tables():
            if columns[-1] != BATCH_COLUMN:
                raise ValueError(f"{table}: {BATCH_COLUMN} must be the last column of its rows")
            types = self._column_types[table]
            missing = [column for column in columns if column not in types]
            if missing:
                raise ValueError(f"{table} has no column(s) {missing}; is the schema migrated?")
            if types[BATCH_COLUMN] != _BATCH_TYPE:
                raise ValueError(f"{table}.{BATCH_COLUMN} is {types[BATCH_COLUMN]}, not {_BATCH_TYPE}")
            heads = [
                (_column_head(column, types[column]), get_from_name(types[column])) for column in columns[:-1]
            ]
            self._tables[table] = (tuple(columns), heads)
        # clickhouse-connect's column writers read per-column format options from an insert context; the
        # defaults are what its own insert uses.
        self._context = InsertContext("", [], [])

    @classmethod
    def for_store(cls, store: Store, flattener: Flattener, calls: bool = True) -> RequestEncoder:
        """An encoder for the column types of ``store``'s (migrated) tables."""
        tables = [table for table, _, _ in FlatBatch().tables()]
        return cls(flattener, {table: store.column_types(table) for table in tables}, calls)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RequestEncoder, (self._flattener, self._column_types, self._calls))

    def encode(self, project_id: str, request: ExportTraceServiceRequest) -> EncodedRequest:
        """Flatten ``request`` for ``project_id`` and encode the rows of every table."""
        flat = FlatBatch()
        with _cyclic_gc_paused():
            self._flattener.flatten([(project_id, request)], batch=0, out=flat, calls=self._calls)
            tables = {table: self._encode_table(table, rows) for table, _, rows in flat.tables()}
        return EncodedRequest(tables, flat.pii_findings, flat.guard_decisions, flat.calls)

    def _encode_table(self, table: str, rows: Sequence[Sequence[Any]]) -> EncodedTable:
        if not rows:
            return EncodedTable(0, b"")
        _, heads = self._tables[table]
        out = bytearray()
        context = self._context
        # The rows end with VeilBatch, which has no head: zip stops before it.
        for (head, ch_type), values in zip(heads, zip(*rows, strict=True), strict=False):
            out += head
            ch_type.write_column(values, out, context)
        return EncodedTable(len(rows), bytes(out))

    @property
    def tables(self) -> Sequence[str]:
        """The tables a request writes, in insert order."""
        return tuple(self._tables)

    def insert_columns(self, table: str) -> Sequence[str]:
        """The columns of ``table``'s blocks, in block order (``VeilBatch`` last)."""
        return self._tables[table][0]

    def blocks(self, table: str, parts: Sequence[EncodedTable], batch: int) -> Iterator[bytes]:
        """The Native blocks of ``parts`` (one per request with rows), with ``VeilBatch = batch``, in
        pieces to be joined or streamed (a block's encoded columns are not copied)."""
        column_count = len(self._tables[table][0])
        batch_head = _column_head(BATCH_COLUMN, _BATCH_TYPE)
        batch_value = batch.to_bytes(8, "little")
        for part in parts:
            if not part.rows:
                continue
            header = bytearray()
            write_leb128(column_count, header)
            write_leb128(part.rows, header)
            yield bytes(header)
            yield part.columns
            yield batch_head + batch_value * part.rows


def _column_head(name: str, type_name: str) -> bytes:
    head = bytearray()
    for text in (name.encode(), type_name.encode()):
        write_leb128(len(text), head)
        head += text
    return bytes(head)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting goes on) while a request is flattened.

    Flattening keeps every container it allocates (about a dozen per span, plus the protobuf wrappers it
    touches) until the rows are encoded, so the collector's young-generation passes keep promoting them
    and trigger full passes that find no garbage. Cycles made meanwhile by other threads are collected
    once it resumes.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
