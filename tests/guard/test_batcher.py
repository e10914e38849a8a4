"""The micro-batcher: concurrent callers share batches and each gets exactly its own results."""

from __future__ import annotations

import asyncio
import threading

import pytest

from veil_collector.guard.batcher import MicroBatcher, Overloaded


class Recorder:
    """A batch function that records each batch and can be held until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(10)
        return [f"{item}:scored" for item in items]


def test_64_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    fn = Recorder()
    fn.release.clear()  # hold the first batch so that the other callers queue up behind it
    batcher: MicroBatcher[str, str] = MicroBatcher(fn, max_batch=64, window_s=0.001)
    submitted = threading.Semaphore(0)
    results: dict[int, list[str]] = {}

    def caller(i: int) -> None:
        items = [f"c{i}-a", f"c{i}-b"] if i % 2 else [f"c{i}"]
        future = batcher.submit(items)
        submitted.release()
        results[i] = future.result(10)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for _ in threads:
        submitted.acquire(timeout=10)
    fn.release.set()
    for thread in threads:
        thread.join(10)
    batcher.shutdown()

    for i in range(64):
        expected = [f"c{i}-a:scored", f"c{i}-b:scored"] if i % 2 else [f"c{i}:scored"]
        assert results[i] == expected
    sizes = [len(batch) for batch in fn.batches]
    assert sum(sizes) == 96  # 32 callers with one item, 32 with two
    assert max(sizes) <= 64
    # The first batch ran while everybody else queued: the rest fit in two batches of at most 64.
    assert len(sizes) <= 3


def test_64_async_callers_share_batches_and_each_gets_its_own_results() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher: MicroBatcher[str, str] = MicroBatcher(fn, max_batch=64, window_s=0.001)

    async def main() -> list[list[str]]:
        callers = [
            asyncio.ensure_future(batcher.run([f"c{i}-a", f"c{i}-b"] if i % 2 else [f"c{i}"]))
            for i in range(64)
        ]
        await asyncio.sleep(0)  # every caller runs up to its await: all 64 requests are queued
        fn.release.set()
        return await asyncio.gather(*callers)

    results = asyncio.run(main())
    batcher.shutdown()
    for i, result in enumerate(results):
        assert result == ([f"c{i}-a:scored", f"c{i}-b:scored"] if i % 2 else [f"c{i}:scored"])
    sizes = [len(batch) for batch in fn.batches]
    assert sum(sizes) == 96 and max(sizes) <= 64 and len(sizes) <= 3


def test_an_async_caller_that_gives_up_does_not_disturb_the_others() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher: MicroBatcher[str, str] = MicroBatcher(fn, window_s=0)

    async def main() -> tuple[list[str], list[str]]:
        first = asyncio.ensure_future(batcher.run(["first"]))
        await asyncio.sleep(0)
        assert await asyncio.to_thread(fn.entered.wait, 10)
        gone = asyncio.ensure_future(batcher.run(["gone"]))
        last = asyncio.ensure_future(batcher.run(["last"]))
        await asyncio.sleep(0)
        gone.cancel()  # e.g. the HTTP client disconnected while its request waited for a batch
        fn.release.set()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await first, await last

    assert asyncio.run(main()) == (["first:scored"], ["last:scored"])
    batcher.shutdown()
    assert ["gone"] not in fn.batches and ["gone", "last"] not in fn.batches


def test_an_async_caller_gets_the_batch_error_and_an_empty_call_needs_no_worker() -> None:
    def broken(items: list[str]) -> list[str]:
        raise RuntimeError("CUDA out of memory")

    batcher: MicroBatcher[str, str] = MicroBatcher(broken, window_s=0)

    async def main() -> None:
        assert await batcher.run([]) == []
        with pytest.raises(RuntimeError, match="CUDA out of memory"):
            await batcher.run(["a"])

    asyncio.run(main())
    batcher.shutdown()


def test_a_request_never_splits_and_an_oversized_one_runs_alone() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher: MicroBatcher[str, str] = MicroBatcher(fn, max_batch=4, window_s=0.001)
    first = batcher.submit(["x"])
    assert fn.entered.wait(10)
    a = batcher.submit(["a1", "a2", "a3"])
    b = batcher.submit(["b1", "b2", "b3"])
    big = batcher.submit([f"g{i}" for i in range(6)])
    fn.release.set()
    assert first.result(10) == ["x:scored"]
    assert a.result(10) == ["a1:scored", "a2:scored", "a3:scored"]
    assert b.result(10) == ["b1:scored", "b2:scored", "b3:scored"]
    assert big.result(10) == [f"g{i}:scored" for i in range(6)]
    assert [len(batch) for batch in fn.batches] == [1, 3, 3, 6]
    batcher.shutdown()


def test_a_failing_batch_fails_its_callers_and_the_worker_goes_on() -> None:
    calls = []

    def flaky(items: list[str]) -> list[str]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return items

    batcher: MicroBatcher[str, str] = MicroBatcher(flaky, window_s=0)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        batcher.submit(["a"]).result(10)
    assert batcher.submit(["b"]).result(10) == ["b"]
    batcher.shutdown()


def test_a_wrong_number_of_results_is_an_error_not_a_mix_up() -> None:
    batcher: MicroBatcher[str, str] = MicroBatcher(lambda items: items[:-1], window_s=0)
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        batcher.submit(["a", "b"]).result(10)
    batcher.shutdown()


def test_a_full_queue_refuses_at_once_and_shutdown_refuses_new_work() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher: MicroBatcher[str, str] = MicroBatcher(fn, max_queue=1, window_s=0)
    running = batcher.submit(["running"])
    assert fn.entered.wait(10)
    queued = batcher.submit(["queued"])
    with pytest.raises(Overloaded, match="1 guard requests are already waiting"):
        batcher.submit(["refused"])
    fn.release.set()
    assert running.result(10) == ["running:scored"] and queued.result(10) == ["queued:scored"]
    batcher.shutdown()
    with pytest.raises(Overloaded, match="shut down"):
        batcher.submit(["late"])


def test_a_batch_keeps_collecting_while_requests_keep_coming() -> None:
    fn = Recorder()
    # A 10 s window with a 1 s gap: the batch closes one gap after the last arrival, not at the window.
    batcher: MicroBatcher[str, str] = MicroBatcher(fn, window_s=10, gap_s=1)
    futures = [batcher.submit([f"r{i}"]) for i in range(5)]
    assert [f.result(10) for f in futures] == [[f"r{i}:scored"] for i in range(5)]
    assert fn.batches == [[f"r{i}" for i in range(5)]]
    batcher.shutdown()


def test_empty_submissions_resolve_without_the_worker() -> None:
    fn = Recorder()
    batcher: MicroBatcher[str, str] = MicroBatcher(fn)
    assert batcher.submit([]).result(0) == []
    batcher.shutdown()
    assert fn.batches == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        MicroBatcher(lambda items: items, max_batch=0)
    with pytest.raises(ValueError, match="window_s and gap_s must not be negative"):
        MicroBatcher(lambda items: items, window_s=-1)
    with pytest.raises(ValueError, match="window_s and gap_s must not be negative"):
        MicroBatcher(lambda items: items, gap_s=-1)
