"""Wraps generator and async-generator functions so that hooks run around every step of the body.

`veil.context` and `@veil.observe` both need something current (stamps, a span) while a generator body
runs and not in the consumer between chunks, and `@veil.observe` also sees each chunk and how the stream
ended. `yield from` gives no place to run code between steps, and async generators have no `yield from`
at all, so the wrappers here drive the inner generator by hand, with `yield from`'s semantics (PEP 380):
values sent in and exceptions thrown in reach the body, `close()` (or garbage collection) closes it, its
return value becomes the wrapper's, and its exceptions reach the consumer unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Literal

StreamEnd = Literal["exhausted", "error", "closed"]
"""How a stream ended: its body returned, its body raised, or it was closed (or garbage-collected)."""


class StepHooks:
    """What a wrapped generator does around the steps of its body; every hook here does nothing.

    The hooks run on the consumer's thread, in the middle of its iteration, and nothing catches their
    exceptions: a hook that does SDK work guards it (`capture_internal_exceptions`) so that it never raises
    into the app.
    """

    __slots__ = ()

    def before_step(self) -> Any:
        """Runs just before each step of the body; returns what `after_step` receives."""
        return None

    def after_step(self, token: Any) -> None:
        """Runs just after each step of the body, however it ended, before `on_chunk` or `on_end`."""

    def on_chunk(self, chunk: Any) -> None:
        """Runs for each value the body yields, before the consumer receives it."""

    def on_end(self, how: StreamEnd, result: Any, error: BaseException | None) -> None:
        """Runs once when the stream ends, with the body's return value or the exception it raised.

        Async generators return nothing, so their `result` is None. A stream closed before its first step
        never started its body and runs no hooks at all.
        """


_NO_HOOKS = StepHooks()

HooksFor = Callable[[tuple[Any, ...], dict[str, Any]], StepHooks | None]
"""Called with a call's arguments when its stream starts (at its first step); None runs it unhooked."""


def wrap_generator(func: Callable[..., Generator[Any, Any, Any]], hooks_for: HooksFor) -> Callable[..., Any]:
    """Returns a generator function that runs `func`'s generator with `hooks_for(args, kwargs)`'s hooks.

    Args:
        func: A generator function; the wrapper keeps its metadata (`functools.wraps`).
        hooks_for: Gives the hooks for one call; when it returns None the body runs as a plain `yield from`.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # Calling a generator function runs none of its body, so there is nothing to hook yet.
        inner = func(*args, **kwargs)
        hooks = hooks_for(args, kwargs)
        if hooks is None:
            return (yield from inner)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = hooks.before_step()
            try:
                if to_throw is None:
                    chunk = inner.send(to_send)
                else:
                    exc, to_throw = to_throw, None
                    chunk = inner.throw(exc)
            except StopIteration as stop:
                hooks.after_step(token)
                hooks.on_end("exhausted", stop.value, None)
                return stop.value
            except BaseException as exc:
                hooks.after_step(token)
                hooks.on_end("error", None, exc)
                raise
            hooks.after_step(token)
            hooks.on_chunk(chunk)
            try:
                to_send = yield chunk
            except GeneratorExit:
                # close(), or garbage collection of an unfinished stream: the body's `finally` runs now.
                try:
                    inner.close()
                finally:
                    hooks.on_end("closed", None, None)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


def wrap_async_generator(
    func: Callable[..., AsyncGenerator[Any, Any]], hooks_for: HooksFor
) -> Callable[..., Any]:
    """Returns an async generator function that runs `func`'s async generator with `hooks_for`'s hooks.

    Args:
        func: An async generator function; the wrapper keeps its metadata (`functools.wraps`).
        hooks_for: Gives the hooks for one call; when it returns None the body runs without hooks.
    """

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        inner = func(*args, **kwargs)
        hooks = hooks_for(args, kwargs)
        if hooks is None:
            # No `yield from` for async generators: the same loop, with hooks that do nothing.
            hooks = _NO_HOOKS
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = hooks.before_step()
            try:
                if to_throw is None:
                    chunk = await inner.asend(to_send)
                else:
                    exc, to_throw = to_throw, None
                    chunk = await inner.athrow(exc)
            except StopAsyncIteration:
                hooks.after_step(token)
                hooks.on_end("exhausted", None, None)
                return
            except BaseException as exc:
                hooks.after_step(token)
                hooks.on_end("error", None, exc)
                raise
            hooks.after_step(token)
            hooks.on_chunk(chunk)
            try:
                to_send = yield chunk
            except GeneratorExit:
                # aclose(), or the event loop finalizing an abandoned stream.
                try:
                    await inner.aclose()
                finally:
                    hooks.on_end("closed", None, None)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper
