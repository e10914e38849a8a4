"""Veil's span processor: one bounded queue, one export thread, every loss counted.

It plays the part of OTel's `BatchSpanProcessor`, for two reasons: finished `VeilSpan`s are turned into
`ReadableSpan`s (with all serialization and GenAI extraction) on its thread rather than the caller's, and
drops must be counted and logged once, not warned per span. It is also a regular `SpanProcessor`, so
added to an application's `TracerProvider` it exports that application's own OTel spans the same way.

Caller-side cost of `submit`: one length check and one `deque.append` (atomic under the GIL).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from veil._guarded import capture_internal_exceptions, logger, record_failure


class VeilSpanProcessor(SpanProcessor):
    """Queues finished spans and exports them in batches from a daemon thread.

    Args:
        exporter: Receives batches of `ReadableSpan` (a `ScrubbingSpanExporter` in production).
        convert: Turns a queued non-`ReadableSpan` item (a `VeilSpan`) into a `ReadableSpan`; runs on the
            export thread; an exception drops that one span and is counted under stage "convert".
        max_queue_size: Spans held at most; beyond it new spans are dropped and counted.
        max_export_batch_size: Spans per export call; a full batch wakes the thread early.
        schedule_delay: Seconds between exports when no batch fills up.

    Raises:
        ValueError: For a non-positive size or delay, or a batch larger than the queue.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        convert: Callable[[Any], ReadableSpan],
        *,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay: float = 1.0,
    ) -> None:
        if max_queue_size <= 0 or max_export_batch_size <= 0 or schedule_delay <= 0:
            raise ValueError("max_queue_size, max_export_batch_size and schedule_delay must be positive")
        if max_export_batch_size > max_queue_size:
            raise ValueError("max_export_batch_size must not exceed max_queue_size")
        self._exporter = exporter
        self._convert = convert
        self._max_queue_size = max_queue_size
        self._batch_size = max_export_batch_size
        self._delay = schedule_delay
        self._queue: collections.deque[Any] = collections.deque()
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self._drop_logged = False
        self._shutdown = False
        self._start_worker()
        if hasattr(os, "register_at_fork"):
            # A forked child inherits the queue but not the thread: start afresh there.
            reinit = weakref.WeakMethod(self._start_worker)

            def after_in_child() -> None:
                method = reinit()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=after_in_child)

    def _start_worker(self) -> None:
        # Locks are made afresh, also in a forked child: the fork may have copied one held by a thread
        # that does not exist there.
        self._queue.clear()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # The flush helper that has not yet counted the queue: later force_flush calls wait for it.
        self._waiting_flush: threading.Event | None = None
        self._pid = os.getpid()
        self._worker = threading.Thread(target=self._run, name="veil-export", daemon=True)
        self._worker.start()

    # --- caller's thread --------------------------------------------------------------------------------
    def submit(self, item: Any) -> None:
        """Queues a finished span (a `VeilSpan` or a `ReadableSpan`); counts it as dropped when full."""
        queue = self._queue
        if self._shutdown or len(queue) >= self._max_queue_size:
            self._drop(1, "shutdown" if self._shutdown else "queue_full")
            return
        queue.append(item)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queues an OTel SDK span that ended, if it is sampled."""
        if self._shutdown:
            # Still registered on the application's provider after veil.shutdown(): not a loss to report.
            return
        context = span.context
        if context is not None and context.trace_flags.sampled:
            self.submit(span)

    def _drop(self, count: int, reason: str) -> None:
        with self._counts_lock:
            self.dropped += count
            first = not self._drop_logged
            self._drop_logged = True
        if first:
            logger.warning(
                "veil: dropping spans (%s); the export queue holds %d. Drops are counted in veil.stats() "
                "and not logged again.",
                reason,
                self._max_queue_size,
            )

    # --- export thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._shutdown:
            woken = self._wake.wait(self._delay)
            self._wake.clear()
            if self._shutdown:
                break
            # Woken by a full batch: export full batches only. Timer: export what is there.
            self._export_queued(full_batches_only=woken)
        self._export_queued(full_batches_only=False)

    def _export_queued(self, full_batches_only: bool, flush: threading.Event | None = None) -> None:
        """Exports the spans queued when it starts, batch by batch; later arrivals wait for the next round.

        Taking a snapshot of the count keeps the thread from chasing a busy producer with many tiny
        batches (each an HTTP request). Serialized by a lock: the worker and `force_flush` may both call it.
        `flush` is the flush helper's event: once the count is taken, later callers need a new helper.
        """
        with self._export_lock:
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                if flush is None:
                    pending = len(self._queue)
                else:
                    with self._flush_lock:
                        pending = len(self._queue)
                        if self._waiting_flush is flush:
                            self._waiting_flush = None
                while pending > 0 and (pending >= self._batch_size or not full_batches_only):
                    count = min(pending, self._batch_size)
                    pending -= count
                    batch = []
                    for _ in range(count):
                        try:
                            batch.append(self._queue.popleft())
                        except IndexError:  # shutdown() cleared the queue after its deadline
                            break
                    self._export_batch(batch)
            finally:
                detach(token)

    def _export_batch(self, items: list[Any]) -> None:
        spans: list[ReadableSpan] = []
        convert = self._convert
        for item in items:
            if isinstance(item, ReadableSpan):
                spans.append(item)
                continue
            try:
                spans.append(convert(item))
            except Exception as exc:
                record_failure("convert", type(exc).__name__, exc)
                with self._counts_lock:
                    self.failed += 1
        if not spans:
            return
        result = SpanExportResult.FAILURE
        with capture_internal_exceptions("export"):
            result = self._exporter.export(spans)
        with self._counts_lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        if result is not SpanExportResult.SUCCESS and logger.isEnabledFor(logging.DEBUG):
            logger.debug("veil: export of %d spans failed", len(spans))

    # --- flush and shutdown -----------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Exports everything queued so far; returns False if that did not finish within the timeout."""
        if self._shutdown:
            return False
        deadline = time.monotonic() + timeout_millis / 1000
        # Export on a helper thread so that a hung collector cannot hold the caller past the deadline.
        # A helper that has not counted the queue yet will export this caller's spans too: join it, so
        # that flushes against a stuck collector add no thread per call (at most one waits, one exports).
        with self._flush_lock:
            done = self._waiting_flush
            if done is None:
                done = self._waiting_flush = threading.Event()
                helper = threading.Thread(
                    target=self._flush_helper, args=(done,), name="veil-flush", daemon=True
                )
                try:
                    helper.start()
                except BaseException:  # e.g. no new threads at interpreter shutdown
                    self._waiting_flush = None
                    raise
        if not done.wait(max(0.0, deadline - time.monotonic())):
            return False
        with capture_internal_exceptions("export.flush"):
            # Some exporters return None from force_flush (nothing buffered): only False means failure.
            return self._exporter.force_flush(max(0, int((deadline - time.monotonic()) * 1000))) is not False
        return False

    def _flush_helper(self, done: threading.Event) -> None:
        try:
            self._export_queued(full_batches_only=False, flush=done)
            done.set()
        finally:
            with self._flush_lock:
                if self._waiting_flush is done:
                    self._waiting_flush = None

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Exports what is queued (within the timeout), then shuts the exporter down. Idempotent."""
        if self._shutdown:
            return
        deadline = time.monotonic() + timeout_millis / 1000
        self._shutdown = True
        self._wake.set()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        # The exporter's shutdown also aborts a retry loop that may still hold the worker.
        self._exporter.shutdown()
        left = len(self._queue)
        if left:
            self._queue.clear()
            self._drop(left, "shutdown")

    def queued(self) -> int:
        """Spans waiting in the queue."""
        return len(self._queue)
