"""`@veil.observe`, `veil.span(...)` and `veil.update_current(...)`: how application code opens spans.

The wrappers do as little as possible on the caller's thread: read `_runtime.ACTIVE` (None before
`init()`: the call goes straight through), open a `VeilSpan`, make it current in the OTel context, call
the function, record the result or exception, queue the span. Everything else happens on the export
thread. SDK failures are caught by `capture_internal_exceptions`; the function's own exceptions are
re-raised unchanged, never through the guard.

Streams (generator and async-generator functions) are driven step by step, with the span current only
while the generator body runs, so spans opened inside the body nest under it and spans opened by the
consumer do not. The span ends when the stream is exhausted, raises, is closed, or is garbage-collected
unfinished: Python closes an abandoned generator, which reaches the same path; an abandoned async
generator is finalized by the event loop's async-generator hooks (asyncio's), which close or cancel it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN

from veil import _runtime
from veil import semconv as sc
from veil._generators import StepHooks, StreamEnd, wrap_async_generator, wrap_generator
from veil._guarded import capture_internal_exceptions
from veil._span import SpanTarget, VeilSpan

F = TypeVar("F", bound=Callable[..., Any])

_attach = otel_context.attach
_detach = otel_context.detach
_in_context = trace.set_span_in_context
_guard_start = capture_internal_exceptions("observe.start")
_guard_end = capture_internal_exceptions("observe.end")


def _check_kind(kind: str) -> None:
    if kind not in sc.KINDS:
        raise ValueError(f"kind must be one of {sorted(sc.KINDS)}, got {kind!r}")


def _open(target: SpanTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[VeilSpan | None, Any]:
    """Starts and attaches a span; (None, None) before init() or if the SDK failed."""
    runtime = _runtime.ACTIVE
    if runtime is None:
        return None, None
    with _guard_start:
        span = runtime.start(target)
        if span.sampled:
            span.capture_call(args, kwargs)
        return span, _attach(_in_context(span))
    return None, None


def _close(span: VeilSpan, token: Any, result: Any, error: BaseException | None) -> None:
    with _guard_end:
        _detach(token)
        span.finish(result, error)


def _wrap_function(func: Callable[..., Any], target: SpanTarget) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _runtime.ACTIVE is None:
            return func(*args, **kwargs)
        span, token = _open(target, args, kwargs)
        if span is None:
            return func(*args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _close(span, token, None, exc)
            raise
        _close(span, token, result, None)
        return result

    return wrapper


def _wrap_coroutine(func: Callable[..., Any], target: SpanTarget) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _runtime.ACTIVE is None:
            return await func(*args, **kwargs)
        span, token = _open(target, args, kwargs)
        if span is None:
            return await func(*args, **kwargs)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            _close(span, token, None, exc)
            raise
        _close(span, token, result, None)
        return result

    return wrapper


class _SpanSteps(StepHooks):
    """Keeps a stream's span current while its body runs, records its chunks, ends it with the stream."""

    __slots__ = ("_span",)

    def __init__(self, span: VeilSpan) -> None:
        self._span = span

    def before_step(self) -> Any:
        with _guard_start:
            return _attach(_in_context(self._span))
        return None

    def after_step(self, token: Any) -> None:
        if token is not None:
            with _guard_end:
                _detach(token)

    def on_chunk(self, chunk: Any) -> None:
        if self._span.sampled:
            with _guard_end:
                self._span.add_chunk(chunk)

    def on_end(self, how: StreamEnd, result: Any, error: BaseException | None) -> None:
        with _guard_end:
            self._span.stream_end = how
            self._span.finish(result, error)


def _start_stream(target: SpanTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _SpanSteps | None:
    """Starts a stream's span; None (the stream runs untraced) before init() or if the SDK failed."""
    runtime = _runtime.ACTIVE
    if runtime is None:
        return None
    with _guard_start:
        span = runtime.start(target)
        if span.sampled:
            span.capture_call(args, kwargs)
            span.chunks = []
        return _SpanSteps(span)
    return None


def _decorate(func: Any, name: str | None, kind: str, capture_input: bool, capture_output: bool) -> Any:
    if isinstance(func, (classmethod, staticmethod)):
        # `@observe` above `@classmethod` / `@staticmethod`: wrap the function inside, keep the descriptor.
        return type(func)(_decorate(func.__func__, name, kind, capture_input, capture_output))
    if not callable(func):
        raise TypeError(f"veil.observe decorates functions, not {type(func).__name__}")
    target = SpanTarget(
        name or getattr(func, "__name__", type(func).__name__),
        kind,
        capture_input=capture_input,
        capture_output=capture_output,
        function=func,
    )
    if inspect.isasyncgenfunction(func):
        return wrap_async_generator(func, functools.partial(_start_stream, target))
    if inspect.iscoroutinefunction(func):
        return _wrap_coroutine(func, target)
    if inspect.isgeneratorfunction(func):
        return wrap_generator(func, functools.partial(_start_stream, target))
    return _wrap_function(func, target)


@overload
def observe(func: F, /) -> F: ...


@overload
def observe(
    *,
    name: str | None = None,
    kind: str = sc.KIND_CHAIN,
    capture_input: bool = True,
    capture_output: bool = True,
) -> Callable[[F], F]: ...


def observe(
    func: Any = None,
    /,
    *,
    name: str | None = None,
    kind: str = sc.KIND_CHAIN,
    capture_input: bool = True,
    capture_output: bool = True,
) -> Any:
    """Traces every call of a function as a span: `@veil.observe` or `@veil.observe(kind="llm", ...)`.

    Works on plain and async functions, generators and async generators (the span lasts until the stream
    ends), methods, classmethods and staticmethods (in either decorator order). The wrapper keeps the
    function's metadata (`functools.wraps`) and re-raises its exceptions unchanged after recording them.
    Before `veil.init()` it calls the function directly.

    Args:
        func: The function, when used without parentheses.
        name: Span / tool / agent name; defaults to the function's `__name__`.
        kind: "llm", "embedding", "tool", "agent" or "chain" (see `veil._convert` for the attributes each
            produces). "llm" reads the model, parameters and messages from the arguments and the model,
            usage, finish reasons and output messages from the result.
        capture_input: Record the arguments (also subject to `init(capture_content=...)`).
        capture_output: Record the result.

    Raises:
        ValueError: For an unknown kind.
        TypeError: When applied to something that is not callable.
    """
    _check_kind(kind)
    if func is None:
        return lambda f: _decorate(f, name, kind, capture_input, capture_output)
    return _decorate(func, name, kind, capture_input, capture_output)


class _SpanScope:
    """The context manager `veil.span()` returns; yields the `VeilSpan` (or OTel's INVALID_SPAN)."""

    __slots__ = ("_kwargs", "_span", "_target", "_token")

    def __init__(self, target: SpanTarget, kwargs: dict[str, Any]) -> None:
        self._target = target
        self._kwargs = kwargs
        self._span: VeilSpan | None = None
        self._token: Any = None

    def __enter__(self) -> trace.Span:
        self._span, self._token = _open(self._target, (), self._kwargs)
        return self._span if self._span is not None else INVALID_SPAN

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._span is not None:
            _close(self._span, self._token, self._span.result, exc)
            self._span = None

    async def __aenter__(self) -> trace.Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def span(name: str, kind: str = sc.KIND_CHAIN, *, input: Any = None) -> _SpanScope:
    """Opens a span around a block: `with veil.span("retrieve", kind="tool", input={"q": q}) as s: ...`.

    The span nests under the current span and becomes current inside the block; an exception leaving
    the block is recorded and propagates unchanged. Set its output with `veil.update_current(output=...)`.

    Args:
        name: The span's name (tool / agent / workflow name for those kinds).
        kind: As for `observe`.
        input: Recorded as the span's input: a mapping is read like keyword arguments (so an "llm" span
            finds `model`, `messages`, ...), anything else is recorded under "input".

    Raises:
        ValueError: For an unknown kind.
    """
    _check_kind(kind)
    if input is None:
        kwargs: dict[str, Any] = {}
    elif isinstance(input, Mapping):
        kwargs = dict(input)
    else:
        kwargs = {"input": input}
    return _SpanScope(SpanTarget(name, kind), kwargs)


def update_current(
    *,
    model: str | None = None,
    usage: Any = None,
    output: Any = None,
    metadata: Mapping[str, Any] | None = None,
    provider: str | None = None,
) -> None:
    """Sets GenAI facts on the current Veil span by hand; a no-op outside one (or before init).

    Args:
        model: The model that answered (`gen_ai.response.model`; also the request model if unknown).
        usage: Token usage, OpenAI style (`prompt_tokens`/`completion_tokens`) or Anthropic style
            (`input_tokens`/`output_tokens`), as a dict or an object.
        output: The span's output; for "llm" spans a response object, dict or string becomes
            `gen_ai.output.messages`.
        metadata: Merged into `veil.metadata.<key>` attributes.
        provider: `gen_ai.provider.name`, e.g. "openai".
    """
    current = trace.get_current_span()
    if type(current) is not VeilSpan or not current.is_recording():
        return
    values: dict[str, Any] = {}
    for key, value in (("model", model), ("usage", usage), ("metadata", metadata), ("provider", provider)):
        if value is not None:
            values[key] = value
    if output is not None:
        values["output"] = output
    with capture_internal_exceptions("update_current"):
        current.update(values)
