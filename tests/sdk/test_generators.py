"""`veil._generators`: which hooks run around the steps of a wrapped generator, and in what order."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncGenerator, Generator
from typing import Any

import pytest

from veil._generators import StepHooks, StreamEnd, wrap_async_generator, wrap_generator

_CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="consumer")


class Recorder(StepHooks):
    """Makes "body" current around each step and records every hook call."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def before_step(self) -> Any:
        self.calls.append(("before",))
        return _CURRENT.set("body")

    def after_step(self, token: Any) -> None:
        _CURRENT.reset(token)
        self.calls.append(("after",))

    def on_chunk(self, chunk: Any) -> None:
        self.calls.append(("chunk", chunk))

    def on_end(self, how: StreamEnd, result: Any, error: BaseException | None) -> None:
        self.calls.append(("end", how, result, error))


def _step(chunk: Any) -> list[tuple[Any, ...]]:
    return [("before",), ("after",), ("chunk", chunk)]


def _last_step(
    how: StreamEnd, result: Any = None, error: BaseException | None = None
) -> list[tuple[Any, ...]]:
    return [("before",), ("after",), ("end", how, result, error)]


def _wrap(func: Any) -> tuple[Any, Recorder]:
    recorder = Recorder()
    wrap = wrap_async_generator if inspect.isasyncgenfunction(func) else wrap_generator
    return wrap(func, lambda args, kwargs: recorder), recorder


def test_hooks_run_around_each_step_and_the_body_sees_what_they_set() -> None:
    def body(n: int) -> Generator[str, None, str]:
        for _ in range(n):
            yield _CURRENT.get()
        return "done"

    wrapped, recorder = _wrap(body)
    stream = wrapped(2)
    assert next(stream) == "body"
    assert _CURRENT.get() == "consumer"
    assert next(stream) == "body"
    with pytest.raises(StopIteration) as stop:
        next(stream)
    assert stop.value.value == "done"
    assert recorder.calls == _step("body") + _step("body") + _last_step("exhausted", "done")


def test_async_hooks_run_around_each_step_and_the_body_sees_what_they_set() -> None:
    async def body(n: int) -> AsyncGenerator[str, None]:
        for _ in range(n):
            await asyncio.sleep(0)
            yield _CURRENT.get()

    wrapped, recorder = _wrap(body)

    async def consume() -> list[tuple[str, str]]:
        return [(chunk, _CURRENT.get()) async for chunk in wrapped(2)]

    assert asyncio.run(consume()) == [("body", "consumer"), ("body", "consumer")]
    assert recorder.calls == _step("body") + _step("body") + _last_step("exhausted")


def test_an_exception_from_the_body_ends_the_stream_and_reaches_the_consumer_unchanged() -> None:
    error = ValueError("body")

    def body() -> Generator[int, None, None]:
        yield 1
        raise error

    async def abody() -> AsyncGenerator[int, None]:
        yield 1
        raise error

    async def consume_async(stream: AsyncGenerator[int, None]) -> list[int]:
        return [chunk async for chunk in stream]

    wrapped, recorder = _wrap(body)
    with pytest.raises(ValueError) as raised:
        list(wrapped())
    assert raised.value is error
    assert recorder.calls == _step(1) + _last_step("error", None, error)

    awrapped, arecorder = _wrap(abody)
    with pytest.raises(ValueError) as raised:
        asyncio.run(consume_async(awrapped()))
    assert raised.value is error
    assert arecorder.calls == _step(1) + _last_step("error", None, error)


def test_an_exception_thrown_in_runs_inside_the_hooks() -> None:
    def body() -> Generator[str, None, None]:
        try:
            yield "first"
        except KeyError:
            yield f"caught in {_CURRENT.get()}"

    wrapped, recorder = _wrap(body)
    stream = wrapped()
    assert next(stream) == "first"
    assert stream.throw(KeyError("k")) == "caught in body"
    assert recorder.calls == _step("first") + _step("caught in body")


def test_close_closes_the_body_then_ends_the_stream() -> None:
    log: list[str] = []

    def body() -> Generator[int, None, None]:
        try:
            yield 1
            yield 2
        finally:
            log.append("finally")

    async def abody() -> AsyncGenerator[int, None]:
        try:
            yield 1
            yield 2
        finally:
            log.append("async finally")

    wrapped, recorder = _wrap(body)
    stream = wrapped()
    next(stream)
    stream.close()
    assert log == ["finally"]
    assert recorder.calls == [*_step(1), ("end", "closed", None, None)]

    awrapped, arecorder = _wrap(abody)

    async def take_one_and_close() -> None:
        astream = awrapped()
        await astream.__anext__()
        await astream.aclose()

    asyncio.run(take_one_and_close())
    assert log == ["finally", "async finally"]
    assert arecorder.calls == [*_step(1), ("end", "closed", None, None)]


def test_a_stream_closed_before_its_first_step_runs_no_hooks() -> None:
    def body() -> Generator[int, None, None]:
        yield 1

    hooks_for_calls: list[Any] = []
    wrapped = wrap_generator(body, lambda args, kwargs: hooks_for_calls.append(args))
    stream = wrapped()
    stream.close()
    assert hooks_for_calls == []


def test_no_hooks_runs_the_body_as_is() -> None:
    def body(first: int) -> Generator[int, int, int]:
        received = yield first
        return received

    async def abody(first: int) -> AsyncGenerator[int, int]:
        received = yield first
        yield received

    seen: list[tuple[Any, ...]] = []

    def hooks_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append((args, kwargs))

    stream = wrap_generator(body, hooks_for)(first=1)
    assert next(stream) == 1
    with pytest.raises(StopIteration) as stop:
        stream.send(2)
    assert stop.value.value == 2

    async def drive_async() -> list[int]:
        astream = wrap_async_generator(abody, hooks_for)(3)
        return [await astream.__anext__(), await astream.asend(4)]

    assert asyncio.run(drive_async()) == [3, 4]
    assert seen == [((), {"first": 1}), ((3,), {})]


def test_wrappers_keep_generator_kind_and_metadata() -> None:
    def body() -> Generator[int, None, None]:
        """Doc."""
        yield 1

    async def abody() -> AsyncGenerator[int, None]:
        yield 1

    wrapped, _ = _wrap(body)
    awrapped, _ = _wrap(abody)
    assert inspect.isgeneratorfunction(wrapped)
    assert inspect.isasyncgenfunction(awrapped)
    assert (wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__) == ("body", "Doc.", body)
