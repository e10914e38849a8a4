"""Micro-batching: many concurrent callers, one model call.

A transformer scores 64 short texts in one forward pass in little more time than one text, so the guard
endpoint must not run the model once per request. :class:`MicroBatcher` queues every caller's items; one
worker thread takes the first waiting request and keeps collecting while requests keep coming (each next
one within ``gap_s`` of the last, for at most ``window_s`` in all, or until the batch is full), runs the
batch function once on all collected items and hands each caller exactly the slice of results that
belongs to its own items.

Why a gap and not only a fixed window: in a collector the batch thread and the HTTP event loop share the
GIL, so after a batch the next burst of requests reaches the queue one by one, a fraction of a millisecond
apart, for as long as parsing them takes. A fixed 2 ms window would cut that burst into many small
batches; closing the batch only when the inflow pauses keeps batches full under load, while a lone
request waits just one gap.

Async callers (the HTTP route) use :meth:`MicroBatcher.run`: their results are handed to their event loop
in one ``call_soon_threadsafe`` per batch, not one per request. Profiling the collector under 64 concurrent
HTTP clients showed ``asyncio.wrap_future`` around a ``concurrent.futures.Future`` costing the event loop
about a sixth of its time: a condition lock per request and a self-pipe write (a loop wake-up) per result.

The queue is bounded: when it is full, :meth:`MicroBatcher.submit` and :meth:`MicroBatcher.run` raise
:class:`Overloaded` at once (the route answers 503 with ``Retry-After``) instead of letting latency grow
without limit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(RuntimeError):
    """The batcher's queue is full or it is shut down; the caller should retry later."""


@dataclass(slots=True)
class _Request(Generic[T, R]):
    """One caller's items and where its results go: a thread's future or an event loop's future."""

    items: Sequence[T]
    future: concurrent.futures.Future[list[R]] | asyncio.Future[list[R]]

    def start(self) -> bool:
        """False when the caller gave up (cancelled) before its batch ran: its items are not scored."""
        if isinstance(self.future, concurrent.futures.Future):
            return self.future.set_running_or_notify_cancel()
        # Read from the worker thread without the loop: at worst a just-cancelled caller is scored anyway.
        return not self.future.cancelled()


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Collects items from concurrent callers into batches for one batch function.

    Args:
        fn: Scores a batch: ``fn(items)`` returns one result per item, in order. Runs on the worker
            thread only, so it need not be thread-safe. If it raises, every caller of that batch gets the
            exception.
        max_batch: Most items per call of ``fn``. A request with more items than this runs alone.
        window_s: The longest a batch waits for more requests after its first one arrived.
        gap_s: The batch closes when no new request arrived for this long.
        max_queue: Most requests waiting; beyond it :meth:`submit` raises :class:`Overloaded`.
        on_batch: Called after each batch with (items, seconds ``fn`` took), for metrics; must not raise.
        name: The worker thread's name.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 64,
        window_s: float = 0.02,
        gap_s: float = 0.002,
        max_queue: int = 10_000,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "veil-microbatch",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1; got {max_batch}")
        if window_s < 0 or gap_s < 0:
            raise ValueError(f"window_s and gap_s must not be negative; got {window_s}, {gap_s}")
        self._fn = fn
        self.max_batch = max_batch
        self.window_s = window_s
        self.gap_s = gap_s
        self._queue: queue.Queue[_Request[T, R] | object] = queue.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._closed = False
        self._carry: _Request[T, R] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[T]) -> concurrent.futures.Future[list[R]]:
        """Queues ``items``; the future resolves to their results, in order.

        Raises:
            Overloaded: the queue is full or the batcher is shut down.
        """
        future: concurrent.futures.Future[list[R]] = concurrent.futures.Future()
        if not items:
            future.set_result([])
            return future
        self._enqueue(_Request(items, future))
        return future

    async def run(self, items: Sequence[T]) -> list[R]:
        """Queues ``items`` from a coroutine and returns their results, in order.

        The batch worker settles every caller of one batch that waits on this event loop with a single
        ``call_soon_threadsafe``, so the loop wakes once per batch rather than once per request.

        Raises:
            Overloaded: the queue is full or the batcher is shut down.
        """
        if not items:
            return []
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Request(items, future))
        return await future

    def _enqueue(self, request: _Request[T, R]) -> None:
        if self._closed:
            raise Overloaded("the guard batcher is shut down")
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise Overloaded(f"{self._queue.maxsize} guard requests are already waiting") from None

    def shutdown(self, timeout: float = 5.0) -> None:
        """Finishes the requests already queued, then stops the worker (waits at most ``timeout``)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._carry if self._carry is not None else self._queue.get()
            self._carry = None
            if first is _STOP:
                self._fail_leftovers()
                return
            batch = [first]
            size = len(first.items)
            deadline = time.monotonic() + self.window_s
            stop = False
            while size < self.max_batch:
                try:
                    left = min(deadline - time.monotonic(), self.gap_s)
                    nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                if size + len(nxt.items) > self.max_batch:
                    # Too big for this batch: it opens the next one, so no request waits two windows.
                    self._carry = nxt
                    break
                batch.append(nxt)
                size += len(nxt.items)
            self._execute(batch)
            if stop:
                self._fail_leftovers()
                return

    def _fail_leftovers(self) -> None:
        # A submit that raced with shutdown may have queued behind the stop marker: answer it, never hang it.
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not _STOP and request.start():
                _settle([(request, Overloaded("the guard batcher is shut down"))])

    def _execute(self, batch: list[_Request[T, R]]) -> None:
        live = [r for r in batch if r.start()]
        if not live:
            return
        items = [item for request in live for item in request.items]
        started = time.perf_counter()
        try:
            results = list(self._fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # every caller of this batch learns why; the worker keeps serving
            logger.exception("guard batch of %d items failed", len(items))
            _settle([(request, exc) for request in live])
            return
        elapsed = time.perf_counter() - started
        outcomes: list[tuple[_Request[T, R], list[R] | BaseException]] = []
        offset = 0
        for request in live:
            outcomes.append((request, results[offset : offset + len(request.items)]))
            offset += len(request.items)
        _settle(outcomes)
        if self._on_batch is not None:
            self._on_batch(len(items), elapsed)


def _settle(outcomes: Sequence[tuple[_Request[T, R], list[R] | BaseException]]) -> None:
    """Hands each request its results (or the exception): thread futures at once, asyncio ones in one
    callback per event loop."""
    by_loop: defaultdict[
        asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[R]], list[R] | BaseException]]
    ]
    by_loop = defaultdict(list)
    for request, outcome in outcomes:
        future = request.future
        if isinstance(future, asyncio.Future):
            by_loop[future.get_loop()].append((future, outcome))
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_on_loop, pairs)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            logger.debug("dropping %d guard results for a closed event loop", len(pairs))


def _settle_on_loop(pairs: list[tuple[asyncio.Future[list[R]], list[R] | BaseException]]) -> None:
    for future, outcome in pairs:
        if future.done():  # cancelled while its batch ran (the client went away)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
