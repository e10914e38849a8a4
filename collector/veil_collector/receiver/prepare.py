"""The receiver's CPU work for one request: decompress, decode, validate, fast scrub, serialize, and
(without NER) flatten and encode the rows the drain will insert.

This is where ingest spends most of its CPU (the pattern scrub above all), and Python runs it on one core
at a time. ``RequestPreparer`` therefore runs it either on the server's thread pool (``processes=0``) or
in a pool of worker processes, one per core, so that a collector uses every core it is given. The
result is the same either way: the bytes the spool stores, the per-span validation result and the
encoded rows the spool carries to the drain in memory.

The rows are encoded here only when the drain has nothing left to change in the request: with the NER
pass on, the drain scrubs, flattens and encodes itself (``pipeline``).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi.concurrency import run_in_threadpool
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from veil_collector.gc_tuning import tune_gc
from veil_collector.receiver.codec import Encoding, decode_request
from veil_collector.receiver.limits import decompress
from veil_collector.receiver.validate import ValidationResult, drop_invalid_spans

logger = logging.getLogger(__name__)
_encode_failure_logged = False


class ScrubOutcome(Protocol):
    """What the fast pass did (``scrub.PassResult``)."""

    @property
    def changed(self) -> int: ...


class FastScrubber(Protocol):
    """The pattern scrub pass run before a request touches the disk (``scrub.ServerScrubber``)."""

    def fast_pass(self, request: ExportTraceServiceRequest) -> ScrubOutcome: ...

    @property
    def placeholder_key(self) -> bytes: ...


class RowEncoder(Protocol):
    """Flattens a request into encoded rows (``store.native.RequestEncoder``); picklable."""

    def encode(self, project_id: str, request: ExportTraceServiceRequest) -> Any: ...


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """What :func:`prepare` made of one request.

    Attributes:
        body: the validated, scrubbed request the spool stores: the protobuf body as it came (after
            decompression) when neither validation nor the scrub changed it, else the request
            re-serialized.
        result: the spans kept and dropped.
        rows: the request's rows encoded for the drain (``RowEncoder.encode``), or None when no encoder
            was given or no span was accepted.
    """

    body: bytes
    result: ValidationResult
    rows: Any = None


def prepare(
    raw: bytes,
    content_encoding: str | None,
    encoding: Encoding,
    limit: int,
    scrubber: FastScrubber | None,
    project_id: str = "",
    encoder: RowEncoder | None = None,
) -> PreparedRequest:
    """Decode once, drop invalid spans, scrub, serialize what the spool stores, and encode the rows of
    ``project_id`` when an ``encoder`` is given.

    Raises:
        ReceiverError: the request is refused as a whole (400, 413 or 415).
    """
    data = decompress(raw, content_encoding, limit=limit)
    request = decode_request(data, encoding)
    result = drop_invalid_spans(request)
    if not result.accepted:
        return PreparedRequest(request.SerializeToString(), result)
    changed = scrubber.fast_pass(request).changed if scrubber is not None else 0
    rows = _encode_rows(encoder, project_id, request) if encoder is not None else None
    # Most requests come from SDKs that scrubbed at the source, so the pass changes nothing: the protobuf
    # body then parses to exactly the message that re-serializing would give, and is stored as it came
    # (re-serializing costs about 4 µs per span). JSON is always stored as protobuf.
    unchanged = encoding is Encoding.PROTOBUF and not result.rejected and not changed
    return PreparedRequest(data if unchanged else request.SerializeToString(), result, rows)


def _encode_rows(encoder: RowEncoder, project_id: str, request: ExportTraceServiceRequest) -> Any:
    """The encoded rows, or None when encoding fails: the request is still accepted and spooled, and the
    drain encodes it from the spool, where a failure stops the drain with the data kept (nothing acknowledged
    is lost to a flatten bug). Logged once per process, with the traceback."""
    global _encode_failure_logged
    try:
        return encoder.encode(project_id, request)
    except Exception:
        if not _encode_failure_logged:
            _encode_failure_logged = True
            logger.exception(
                "encoding a request's rows failed; the drain encodes such requests from the spool"
            )
        return None


_worker_scrubber: FastScrubber | None = None
_worker_encoder: RowEncoder | None = None


def _init_worker(placeholder_key: bytes | None, encoder: RowEncoder | None) -> None:
    global _worker_scrubber, _worker_encoder
    if placeholder_key is not None:
        from veil_collector.scrub import ServerScrubber

        # The fast pass only: NER runs in the drain, in the server process. The server's placeholder key,
        # so that every worker gives a value of a trace the same placeholder.
        _worker_scrubber = ServerScrubber(ner_enabled=False, placeholder_key=placeholder_key)
        _worker_scrubber.warm_up()  # the pattern scan's set-up, before the first request
    _worker_encoder = encoder
    tune_gc()


def _worker_ready() -> None:
    """A no-op task that makes the pool start a worker (running ``_init_worker``)."""


def _prepare_in_worker(
    raw: bytes, content_encoding: str | None, encoding: Encoding, limit: int, project_id: str
) -> PreparedRequest | _RawBodyKept:
    prepared = prepare(raw, content_encoding, encoding, limit, _worker_scrubber, project_id, _worker_encoder)
    if prepared.body is raw:
        # The server holds these bytes already: do not send them back through the pipe.
        return _RawBodyKept(prepared.result, prepared.rows)
    return prepared


@dataclass(frozen=True, slots=True)
class _RawBodyKept:
    """A worker's :class:`PreparedRequest` whose body is the raw body the server sent it."""

    result: ValidationResult
    rows: Any


class RequestPreparer:
    """Runs :func:`prepare` on the thread pool or in ``processes`` worker processes.

    Args:
        scrubber: the fast-pass scrubber of this process, or None for no scrub.
        processes: 0 runs in this process; N > 0 starts N worker processes, each with its own
            ``ServerScrubber`` (the fast pass only) when ``scrubber`` is set, and a copy of ``encoder``.
        encoder: encodes the rows of every accepted request; None leaves that to the drain.
    """

    def __init__(
        self, scrubber: FastScrubber | None, processes: int = 0, encoder: RowEncoder | None = None
    ) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0; got {processes}")
        self._scrubber = scrubber
        self._encoder = encoder
        self._pool = (
            ProcessPoolExecutor(
                max_workers=processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(scrubber.placeholder_key if scrubber is not None else None, encoder),
            )
            if processes
            else None
        )
        if self._pool is not None:
            # The pool starts a worker per task it cannot place; one task each starts them all now, so
            # their imports and scrubber set-up (a second or more) overlap the server's start-up instead
            # of holding back the first requests.
            for _ in range(processes):
                self._pool.submit(_worker_ready)

    async def prepare(
        self, raw: bytes, content_encoding: str | None, encoding: Encoding, limit: int, project_id: str
    ) -> PreparedRequest:
        """See :func:`prepare`; raises its ``ReceiverError`` unchanged."""
        if self._pool is None:
            return await run_in_threadpool(
                prepare, raw, content_encoding, encoding, limit, self._scrubber, project_id, self._encoder
            )
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(
            self._pool, _prepare_in_worker, raw, content_encoding, encoding, limit, project_id
        )
        if isinstance(prepared, _RawBodyKept):
            return PreparedRequest(raw, prepared.result, prepared.rows)
        return prepared

    def close(self) -> None:
        """Stop the worker processes (requests still being prepared finish first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
