"""Generators decorated with `veil.context` or `@veil.observe` behave exactly like the bare generators.

Each scenario drives a bare generator and its decorated twin through the same sends, throws and closes and
compares everything the consumer and the body can see: each value or exception, the return value, and what
the body received and ran (its `except` and `finally` blocks).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import pytest

import veil
from veil import _observe
from veil._span import VeilSpan

# One operation on a stream: ("send", value), ("throw", exception) or ("close", None).
Op = tuple[str, Any]

SCENARIOS: dict[str, list[Op]] = {
    "exhausted with a return value": [("send", None), ("send", "a"), ("send", "b"), ("send", "c")],
    "exception thrown in and recovered": [
        ("send", None),
        ("send", "a"),
        ("throw", KeyError("k")),
        ("send", "z"),
        ("send", None),
    ],
    "exception thrown in and not caught": [("send", None), ("throw", ValueError("v")), ("send", None)],
    "exception thrown in before the first step": [("throw", KeyError("early")), ("send", None)],
    "GeneratorExit thrown in": [("send", None), ("throw", GeneratorExit()), ("send", None)],
    "body raises": [("send", None), ("send", "boom"), ("send", None)],
    "closed mid-stream": [("send", None), ("close", None), ("send", None)],
    "closed before the first step": [("close", None), ("send", None)],
}


def _body(log: list[Any]) -> Generator[Any, Any, str]:
    try:
        received = yield 1
        log.append(("sent", received))
        if received == "boom":
            raise RuntimeError("boom")
        try:
            received = yield 2
        except KeyError as exc:
            log.append(("caught", exc.args))
            received = yield "recovered"
        log.append(("sent", received))
        yield 3
        return "done"
    finally:
        log.append("finally")


async def _async_body(log: list[Any]) -> AsyncGenerator[Any, Any]:
    try:
        received = yield 1
        log.append(("sent", received))
        if received == "boom":
            raise RuntimeError("boom")
        try:
            received = yield 2
        except KeyError as exc:
            log.append(("caught", exc.args))
            received = yield "recovered"
        log.append(("sent", received))
        yield 3
    finally:
        log.append("finally")


def _raised(exc: BaseException) -> tuple[str, tuple[Any, ...]]:
    # A StopIteration's args carry the generator's return value.
    return (type(exc).__name__, exc.args)


def _drive(gen: Generator[Any, Any, Any], ops: list[Op]) -> list[Any]:
    seen: list[Any] = []
    for op, value in ops:
        try:
            if op == "send":
                seen.append(gen.send(value))
            elif op == "throw":
                seen.append(gen.throw(value))
            else:
                seen.append(gen.close())
        except BaseException as exc:
            seen.append(_raised(exc))
    return seen


async def _adrive(agen: AsyncGenerator[Any, Any], ops: list[Op]) -> list[Any]:
    seen: list[Any] = []
    for op, value in ops:
        try:
            if op == "send":
                seen.append(await agen.asend(value))
            elif op == "throw":
                seen.append(await agen.athrow(value))
            else:
                seen.append(await agen.aclose())
        except BaseException as exc:
            seen.append(_raised(exc))
    await agen.aclose()
    return seen


def _decorators() -> dict[str, Callable[[Any], Any]]:
    return {"context": veil.context(user_id="u1", tags=["t"]), "observe": veil.observe(kind="llm")}


@pytest.fixture(params=["context", "observe"])
def decorate(request: pytest.FixtureRequest, start_veil: Any) -> Callable[[Any], Any]:
    """Each decorator that drives generators step by step, with the SDK running."""
    start_veil()
    return _decorators()[request.param]


@pytest.mark.parametrize("ops", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_decorated_generator_is_transparent(decorate: Callable[[Any], Any], ops: list[Op]) -> None:
    bare_log: list[Any] = []
    wrapped_log: list[Any] = []
    bare = _drive(_body(bare_log), ops)
    wrapped = _drive(decorate(_body)(wrapped_log), ops)
    assert wrapped == bare
    assert wrapped_log == bare_log
    assert veil.flush(5)


@pytest.mark.parametrize("ops", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_decorated_async_generator_is_transparent(decorate: Callable[[Any], Any], ops: list[Op]) -> None:
    bare_log: list[Any] = []
    wrapped_log: list[Any] = []
    bare = asyncio.run(_adrive(_async_body(bare_log), ops))
    wrapped = asyncio.run(_adrive(decorate(_async_body)(wrapped_log), ops))
    assert wrapped == bare
    assert wrapped_log == bare_log
    assert veil.flush(5)


def test_yield_from_a_decorated_generator_gets_its_return_value(decorate: Callable[[Any], Any]) -> None:
    def outer(log: list[Any]) -> Generator[Any, Any, Any]:
        result = yield from decorate(_body)(log)
        yield result

    assert list(outer([])) == [1, 2, 3, "done"]


def test_consumer_break_closes_the_body(decorate: Callable[[Any], Any]) -> None:
    log: list[Any] = []
    stream = decorate(_body)(log)
    for _ in stream:
        break
    assert log == []
    del stream  # CPython finalizes the abandoned stream now, which closes the body
    assert log == ["finally"]


@pytest.mark.veil_internal_errors
def test_observe_hook_failures_are_counted_never_raised(
    start_veil: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = start_veil()

    def fail(*args: Any) -> Any:
        raise RuntimeError("sdk bug")

    # Making the span current before each step fails, and so does recording each chunk.
    monkeypatch.setattr(_observe, "_attach", fail)
    monkeypatch.setattr(VeilSpan, "add_chunk", fail)

    @veil.observe(name="stream")
    def stream() -> Generator[str, None, None]:
        yield "a"
        yield "b"

    @veil.observe(name="astream")
    async def astream() -> AsyncGenerator[str, None]:
        yield "a"
        yield "b"

    async def consume() -> list[str]:
        return [chunk async for chunk in astream()]

    assert list(stream()) == ["a", "b"]
    assert asyncio.run(consume()) == ["a", "b"]
    assert veil.flush(5)
    assert receiver.names() == ["invoke_workflow astream", "invoke_workflow stream"]
    errors = veil.stats()["internal_errors"]
    assert errors["observe.start/RuntimeError"] == 6  # each step of both streams: two chunks, then the end
    assert errors["observe.end/RuntimeError"] == 4  # each chunk of both streams
