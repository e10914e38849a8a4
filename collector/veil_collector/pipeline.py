"""The drain: spooled requests -> server-side scrub -> ClickHouse, exactly once, then later stages.

A prepare thread reads the spool in seq order and cuts a batch ``[a, b)`` once it holds
``batch_spans`` spans or its oldest request has waited ``interval_s``. For each batch it:

1. takes each request's rows as the receiver encoded them (``store.native``; the spool carries them in
   memory as the record's attachment), or, for a record without one (replayed after a restart, or
   with the NER pass on), parses the request, runs the NER scrub pass on it (when a scrubber is
   configured) and encodes its rows itself with the same encoder, so the rows are the same either way;
2. hands the batch to the store thread (one batch waits at most, so memory stays bounded).

Encoding in the drain is pure Python, while an insert spends part of its time without the GIL (in
chDB's C++ code, or waiting for a ClickHouse server), so preparing batch ``n + 1`` while batch ``n`` is
inserted overlaps the two. The store thread takes the batches in seq order and, for each:

3. writes the intent ``(a, b)`` to ``<spool>/inflight`` (temp file, fsync, rename, fsync the folder);
4. inserts each table synchronously, one Native block per request with ``VeilBatch = a`` added to
   each, with ``insert_deduplication_token = veil:{a}:{b}:{table}``,
   ``insert_deduplicate=1`` and ``deduplicate_blocks_in_dependent_materialized_views=1``, so a replay
   of the same batch (same rows, same order) is dropped by ClickHouse;
5. checkpoints the spool at ``b`` only after every insert was acknowledged;
6. hands a :class:`~veil_collector.records.StoredBatch` to the listeners through a bounded queue.

ClickHouse's deduplication log is written before the part is committed, so a crash between the two
would make a replay look like a duplicate although its rows were never stored. The first batch after a
restart with a pending intent, and every retry after an insert error, therefore verifies instead of
trusting the token: it counts the batch's rows per table (``VeilBatch = a``); a complete table is
skipped, an incomplete one has its partial rows deleted and is re-inserted under a fresh token.

While ClickHouse is unavailable the batch is retried with backoff and the spool absorbs new requests,
until it is full and the receiver answers 503. A listener that blocks fills the queue, which stops the
drain in the same way: memory stays bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import Counter, Gauge, Histogram

from veil_collector.records import StoredBatch
from veil_collector.spool import Record, Spool, SpoolError
from veil_collector.spool.files import atomic_write
from veil_collector.store.client import Store
from veil_collector.store.native import EncodedRequest, RequestEncoder

logger = logging.getLogger(__name__)

INTENT_FILE = "inflight"
_READ_CHUNK_RECORDS = 8
_READ_MAX_BYTES = 64 * 1024 * 1024
_BACKOFF_MAX_S = 30.0
_LISTENER_QUEUE = 4
_SPANS_TABLE = "otel_traces"

INSERT_SECONDS = Histogram(
    "veil_insert_seconds",
    "Latency of one ClickHouse insert",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INSERT_ERRORS = Counter("veil_insert_errors_total", "Failed batch store attempts (retried)")
ROWS_INSERTED = Counter("veil_rows_inserted_total", "Rows written to ClickHouse", ["table"])
BATCH_SPANS = Histogram(
    "veil_drain_batch_spans",
    "Spans per drained batch",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
)
DRAIN_LAG = Histogram(
    "veil_drain_lag_seconds",
    "From a request's acceptance to its batch being stored (oldest request of each batch)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)
DRAIN_LAG_NOW = Gauge("veil_drain_lag_current_seconds", "Age of the oldest request of the last stored batch")
UNDECODABLE = Counter("veil_drain_undecodable_records_total", "Spool records that no longer parse (skipped)")
LISTENER_ERRORS = Counter("veil_pipeline_listener_errors_total", "Exceptions raised by batch listeners")

Listener = Callable[[StoredBatch], None]


class NerScrubber(Protocol):
    """The server-side scrub pass run on each request before it is stored (``scrub.ServerScrubber``)."""

    def ner_pass(self, request: ExportTraceServiceRequest) -> Any: ...


class Pipeline:
    """Drains a spool into ClickHouse in batches; see the module docstring for the guarantees.

    Args:
        spool: the spool to drain; the pipeline is its only reader.
        store: the ClickHouse store (migrated).
        encoder: turns requests into encoded rows (the receiver's, for records spooled without them).
        scrubber: runs ``ner_pass`` on every request the drain encodes; None skips the pass. With a
            scrubber, the receiver must not encode rows (they would miss the NER pass).
        batch_spans: cut a batch once it holds this many spans.
        interval_s: cut a batch once its oldest request has waited this long.
    """

    def __init__(
        self,
        spool: Spool,
        store: Store,
        *,
        encoder: RequestEncoder,
        scrubber: NerScrubber | None = None,
        batch_spans: int = 10_000,
        interval_s: float = 0.5,
    ) -> None:
        if batch_spans < 1 or interval_s <= 0:
            raise ValueError("batch_spans must be >= 1 and interval_s > 0")
        self._spool = spool
        self._store = store
        self._encoder = encoder
        self._scrubber = scrubber
        self._batch_spans = batch_spans
        self._interval_s = interval_s
        self._intent_path = spool.directory / INTENT_FILE
        self._listeners: tuple[Listener, ...] = ()
        self._listeners_lock = threading.Lock()
        self._handoff: queue.Queue[StoredBatch | None] = queue.Queue(maxsize=_LISTENER_QUEUE)
        self._prepared: queue.Queue[_PreparedBatch] = queue.Queue(maxsize=1)
        self._stopping = threading.Event()
        self._drained = threading.Condition()
        self._preparer: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None
        self.last_error: str | None = None

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every stored batch, on the pipeline's dispatch thread.

        Listeners run one after another; one that blocks holds back the drain (backpressure), one that
        raises is logged and counted and does not stop the others.
        """
        with self._listeners_lock:
            self._listeners = (*self._listeners, listener)

    def start(self) -> None:
        """Start the prepare, drain and dispatch threads."""
        if self._worker is not None:
            return
        self._dispatcher = threading.Thread(target=self._dispatch, name="veil-pipeline-dispatch", daemon=True)
        self._dispatcher.start()
        self._preparer = threading.Thread(
            target=self._prepare_loop, name="veil-pipeline-prepare", daemon=True
        )
        self._preparer.start()
        self._worker = threading.Thread(target=self._run, name="veil-pipeline-drain", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch being stored, then stop; what is left stays in the spool for next start."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        for thread in (self._preparer, self._worker):
            if thread is not None:
                thread.join(max(deadline - time.monotonic(), 0.0))
        if self._dispatcher is not None:
            try:
                self._handoff.put(None, timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Full:
                logger.warning("pipeline: a listener is still blocked at shutdown; not waiting for it")
                return
            self._dispatcher.join(max(deadline - time.monotonic(), 0.0))

    def wait_drained(self, timeout: float) -> bool:
        """Wait until everything spooled so far is stored; False when ``timeout`` seconds pass first."""
        target = self._spool.drained_upto + self._spool.depth_records
        deadline = time.monotonic() + timeout
        with self._drained:
            while self._spool.drained_upto < target:
                left = deadline - time.monotonic()
                if left <= 0 or (self._worker is not None and not self._worker.is_alive()):
                    return False
                self._drained.wait(min(left, 0.1))
        return True

    # ------------------------------------------------------------------ drain

    def _prepare_loop(self) -> None:
        """Collect, scrub and flatten batches in seq order and queue them for the store thread."""
        with self._stopped_on_error():
            replay = self._pending_intent_size()
            verify_first = replay is not None
            while not self._stopping.is_set():
                batch = self._collect(replay if verify_first else None)
                if not batch:
                    continue
                prepared = self._prepare(batch, verify=verify_first)
                verify_first = False
                while not self._stopping.is_set():
                    try:
                        self._prepared.put(prepared, timeout=0.2)
                        break
                    except queue.Full:
                        continue

    def _run(self) -> None:
        """Store the prepared batches in the order they were cut."""
        with self._stopped_on_error():
            while not self._stopping.is_set():
                try:
                    prepared = self._prepared.get(timeout=0.2)
                except queue.Empty:
                    if self._preparer is not None and not self._preparer.is_alive():
                        return  # the preparer stopped on an error: nothing more will come
                    continue
                self._store_batch(prepared)

    @contextlib.contextmanager
    def _stopped_on_error(self) -> Iterator[None]:
        """Turn a drain thread's fatal error into ``last_error`` (readyz) and a critical log."""
        try:
            yield
        except SpoolError as exc:
            self.last_error = f"spool: {exc}"
            logger.critical("pipeline: stopped draining: %s", exc)
        except Exception as exc:  # a bug or a scrub failure: stop visibly (readyz), keep the data spooled
            self.last_error = f"drain stopped: {exc!r}"
            logger.critical(
                "pipeline: stopped draining; the spool keeps the data for the next start", exc_info=True
            )

    def _pending_intent_size(self) -> int | None:
        """Records in the batch that was being stored when the process stopped, if any."""
        try:
            intent = json.loads(self._intent_path.read_bytes())
        except FileNotFoundError:
            return None
        if intent["a"] != self._spool.drained_upto:
            return None  # that batch was checkpointed
        return int(intent["b"]) - int(intent["a"])

    def _collect(self, exact: int | None) -> list[tuple[Record, EncodedRequest | None]]:
        """The next batch, encoded: ``exact`` records when replaying an intent, else by span count and age.

        A record that no longer parses comes with None (its seq is part of the batch, its rows none).
        """
        batch: list[tuple[Record, EncodedRequest | None]] = []
        spans = 0
        deadline: float | None = None
        while not self._stopping.is_set():
            if exact is not None:
                want, timeout = exact - len(batch), 1.0
            else:
                want = _READ_CHUNK_RECORDS
                timeout = 0.2 if deadline is None else deadline - time.monotonic()
                if timeout <= 0:
                    break
            records = self._spool.read(max_records=want, max_bytes=_READ_MAX_BYTES, timeout=timeout)
            for record in records:
                encoded = record.attachment if record.attachment is not None else self._encode(record)
                if encoded is not None:
                    spans += encoded.tables[_SPANS_TABLE].rows
                batch.append((record, encoded))
            if exact is not None:
                if len(batch) >= exact or not records:
                    break
                continue
            if batch and deadline is None:
                waited = (time.time_ns() - batch[0][0].received_unix_ns) / 1e9
                deadline = time.monotonic() + max(self._interval_s - waited, 0.0)
            if spans >= self._batch_spans:
                break
        return batch

    def _encode(self, record: Record) -> EncodedRequest | None:
        """Parse, NER-scrub and encode a record spooled without its rows (no side effects outside it)."""
        request = _parse(record)
        if request is None:
            return None
        if self._scrubber is not None:
            self._scrubber.ner_pass(request)
        return self._encoder.encode(record.project_id, request)

    def _prepare(
        self, batch: Sequence[tuple[Record, EncodedRequest | None]], *, verify: bool
    ) -> _PreparedBatch:
        first, last = batch[0][0].seq, batch[-1][0].seq + 1
        encoded = [rows for _, rows in batch if rows is not None]
        return _PreparedBatch(first, last, batch[0][0].received_unix_ns, encoded, verify)

    def _store_batch(self, prepared: _PreparedBatch) -> None:
        first, last, encoded, verify = prepared.first, prepared.last, prepared.encoded, prepared.verify
        atomic_write(self._intent_path, json.dumps({"a": first, "b": last}).encode())
        backoff = 0.5
        while True:
            try:
                self._insert(encoded, first, last, verify=verify)
                break
            except Exception as exc:  # any store failure is retried; the spool holds the data meanwhile
                INSERT_ERRORS.inc()
                self.last_error = f"ClickHouse insert failed: {exc}"
                logger.warning("pipeline: storing batch [%d, %d) failed, retrying: %s", first, last, exc)
                verify = True
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
        self._spool.checkpoint(last)
        self.last_error = None
        lag = (time.time_ns() - prepared.oldest_received_unix_ns) / 1e9
        DRAIN_LAG.observe(lag)
        DRAIN_LAG_NOW.set(lag)
        BATCH_SPANS.observe(sum(rows.tables[_SPANS_TABLE].rows for rows in encoded))
        with self._drained:
            self._drained.notify_all()
        stored = _stored_batch(encoded, first) if self._listeners else StoredBatch()
        # Blocks while the listeners are behind (backpressure). At shutdown the dispatcher still empties
        # the queue, so the batch is handed over unless a listener stays blocked.
        while True:
            try:
                self._handoff.put(stored, timeout=0.5)
                break
            except queue.Full:
                if self._stopping.is_set():
                    logger.warning(
                        "pipeline: batch [%d, %d) stored but not handed to blocked listeners", first, last
                    )
                    break

    def _insert(self, encoded: Sequence[EncodedRequest], first: int, last: int, *, verify: bool) -> None:
        for table in self._encoder.tables:
            parts = [rows.tables[table] for rows in encoded]
            count = sum(part.rows for part in parts)
            token = f"veil:{first}:{last}:{table}"
            if verify:
                stored = self._store.query(
                    f"SELECT count() FROM {table} WHERE VeilBatch = {{batch:UInt64}}", {"batch": first}
                ).result_rows[0][0]
                if stored == count:
                    continue
                if stored:
                    logger.warning(
                        "pipeline: %s holds %d of %d rows of batch %d; replacing them",
                        table,
                        stored,
                        count,
                        first,
                    )
                    self._store.command(
                        f"DELETE FROM {table} WHERE VeilBatch = {{batch:UInt64}}", {"batch": first}
                    )
                # The token may sit in the deduplication log without its rows: use a fresh one.
                token = f"{token}:r{secrets.token_hex(4)}"
            if not count:
                continue
            started = time.perf_counter()
            self._store.insert_native(
                table,
                # One bytes object, not a generator: a client that retries the request sends it again.
                b"".join(self._encoder.blocks(table, parts, first)),
                self._encoder.insert_columns(table),
                settings={
                    "insert_deduplication_token": token,
                    "insert_deduplicate": 1,
                    "deduplicate_blocks_in_dependent_materialized_views": 1,
                },
            )
            INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
            ROWS_INSERTED.labels(table).inc(count)

    # ------------------------------------------------------------------ listeners

    def _dispatch(self) -> None:
        while True:
            stored = self._handoff.get()
            if stored is None:
                return
            for listener in self._listeners:
                try:
                    listener(stored)
                except Exception:  # a listener is other stages' code: log, count, keep draining
                    LISTENER_ERRORS.inc()
                    logger.exception("pipeline: listener %r failed", listener)


def _stored_batch(encoded: Sequence[EncodedRequest], batch: int) -> StoredBatch:
    """The listeners' records of a stored batch, with ``veil_batch`` set as in the stored rows."""
    return StoredBatch(
        calls=[call for rows in encoded for call in rows.calls],
        pii_findings=[
            dataclasses.replace(finding, veil_batch=batch)
            for rows in encoded
            for finding in rows.pii_findings
        ],
        guard_decisions=[
            dataclasses.replace(decision, veil_batch=batch)
            for rows in encoded
            for decision in rows.guard_decisions
        ],
    )


@dataclass(frozen=True, slots=True)
class _PreparedBatch:
    """A batch ``[first, last)`` encoded and ready to insert; ``verify`` for a replayed intent."""

    first: int
    last: int
    oldest_received_unix_ns: int
    encoded: list[EncodedRequest]
    verify: bool


def _parse(record: Record) -> ExportTraceServiceRequest | None:
    try:
        return ExportTraceServiceRequest.FromString(record.body)
    except DecodeError:
        # The receiver validated this body and the frame passed its CRC: only a bug gets here.
        UNDECODABLE.inc()
        logger.error("pipeline: spool record %d does not parse; skipping it", record.seq)
        return None
