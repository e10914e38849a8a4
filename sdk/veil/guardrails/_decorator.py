"""``@veil.guard``: checks a function's prompt before the call and its response after (or as it streams).

Sync functions, coroutine functions, generators and async generators are each wrapped in their own kind,
so ``inspect`` and frameworks see what they expect. Generators check their input at the first ``next()``,
like any generator body. A block raises :class:`GuardViolation` or, when ``replacement`` is given, returns
(or, for a stream, yields) it instead.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, overload

from veil.guardrails import _payload
from veil.guardrails._engine import Policy, merge
from veil.guardrails._result import Action, CheckDecision, GuardResult, GuardViolation
from veil.guardrails._span import current_trace_id
from veil.guardrails._stream import StreamWindow
from veil.guardrails.checks import CheckSpec, resolve_checks
from veil.guardrails.vault import Vault

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_INPUT_CHECKS: tuple[str, ...] = ("secrets", "pii")
DEFAULT_OUTPUT_CHECKS: tuple[str, ...] = ("secrets", "pii")

_RAISE = object()  # replacement's default: raise GuardViolation


class Guard:
    """A configured guard; call it on a function to wrap that function.

    Args:
        input: Checks for the prompt: names, :class:`~veil.guardrails.Check` objects or callables.
        output: Checks for the response.
        on_fail: ``"block"``, ``"redact"`` or ``"flag"`` for every violation of a check without an
            ``on_fail`` of its own; None keeps each check's default.
        fail_open: When a check cannot answer in time (collector down or slow): True passes and flags,
            False blocks.
        timeout: Seconds the checks of one call's prompt may take in all (all its texts together), and
            likewise of its response (or of each checked window of a stream).
        vault: True restores redacted PII in the response from a vault made for each call; a
            :class:`Vault` is shared across calls (for example one per conversation); False restores
            nothing.
        replacement: Returned (or yielded, for a stream) instead of raising :class:`GuardViolation`.
        input_args: Names of the parameters that hold the prompt; None checks every argument.
        window: Streams: how many released chunks stay in view of the output checks.
        stride: Streams: how many new chunks are checked together.
    """

    def __init__(
        self,
        *,
        input: Iterable[CheckSpec] = DEFAULT_INPUT_CHECKS,
        output: Iterable[CheckSpec] = DEFAULT_OUTPUT_CHECKS,
        on_fail: Action | None = None,
        fail_open: bool = True,
        timeout: float = 1.0,
        vault: bool | Vault = False,
        replacement: Any = _RAISE,
        input_args: Sequence[str] | None = None,
        window: int = 16,
        stride: int = 1,
    ) -> None:
        if window < 0 or stride < 1:
            raise ValueError(f"window must be >= 0 and stride >= 1; got window={window}, stride={stride}")
        if isinstance(input_args, str):
            input_args = (input_args,)
        self.input = Policy(resolve_checks(input), on_fail, fail_open, timeout)
        self.output = Policy(resolve_checks(output), on_fail, fail_open, timeout)
        self.vault = vault
        self.replacement = replacement
        self.input_args = tuple(input_args) if input_args is not None else None
        self.window = window
        self.stride = stride

    def __call__(self, fn: F) -> F:
        if isinstance(fn, (classmethod, staticmethod)):
            # `@guard` above `@classmethod` / `@staticmethod`: guard the function inside, keep the descriptor.
            return type(fn)(self(fn.__func__))  # type: ignore[return-value]
        signature = inspect.signature(fn) if self.input_args is not None else None
        if signature is not None:
            unknown = set(self.input_args or ()) - set(signature.parameters)
            if unknown:
                raise ValueError(f"input_args {sorted(unknown)} are not parameters of {fn.__qualname__}")

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def async_gen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                vault, trace_id = self._call_vault(), current_trace_id()
                checked = await self._acheck_args(signature, args, kwargs, vault, trace_id)
                if isinstance(checked, GuardResult):
                    yield self._blocked(checked)
                    return
                source = fn(*checked[0], **checked[1])
                stream = StreamWindow(window=self.window, stride=self.stride, vault=vault)
                try:
                    async for chunk in source:
                        if stream.add(chunk):
                            for out in self._released(
                                stream, await self._acheck_window(stream, vault, trace_id)
                            ):
                                yield out
                    if stream.has_pending:
                        for out in self._released(stream, await self._acheck_window(stream, vault, trace_id)):
                            yield out
                    for out in stream.finish():
                        yield out
                except _StreamBlocked as stop:
                    yield self._blocked(stop.result)
                finally:
                    await source.aclose()

            return async_gen_wrapper  # type: ignore[return-value]

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                vault, trace_id = self._call_vault(), current_trace_id()
                checked = self._check_args(signature, args, kwargs, vault, trace_id)
                if isinstance(checked, GuardResult):
                    yield self._blocked(checked)
                    return
                yield from self._guard_stream(fn(*checked[0], **checked[1]), vault, trace_id)

            return gen_wrapper  # type: ignore[return-value]

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                vault, trace_id = self._call_vault(), current_trace_id()
                checked = await self._acheck_args(signature, args, kwargs, vault, trace_id)
                if isinstance(checked, GuardResult):
                    return self._blocked(checked)
                value = await fn(*checked[0], **checked[1])
                deadline = self.output.deadline()
                results = [
                    await self.output.aevaluate(
                        t, "output", vault=vault, trace_id=trace_id, deadline=deadline
                    )
                    for t in _payload.texts(value)
                ]
                return self._finish_output(value, results, vault)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            vault, trace_id = self._call_vault(), current_trace_id()
            checked = self._check_args(signature, args, kwargs, vault, trace_id)
            if isinstance(checked, GuardResult):
                return self._blocked(checked)
            value = fn(*checked[0], **checked[1])
            if inspect.isgenerator(value):  # a plain function that returns a stream
                return self._guard_stream(value, vault, trace_id)
            deadline = self.output.deadline()
            results = [
                self.output.evaluate(t, "output", vault=vault, trace_id=trace_id, deadline=deadline)
                for t in _payload.texts(value)
            ]
            return self._finish_output(value, results, vault)

        return wrapper  # type: ignore[return-value]

    # --- per call -----------------------------------------------------------------------------------------

    def _call_vault(self) -> Vault | None:
        if isinstance(self.vault, Vault):
            return self.vault
        return Vault() if self.vault else None

    def _guarded_values(
        self, signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Any], Callable[[list[Any]], tuple[tuple[Any, ...], dict[str, Any]]]]:
        """The argument values to check, and a function that rebuilds (args, kwargs) from new values."""
        if signature is None:
            keys = list(kwargs)

            def rebuild_all(values: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
                return tuple(values[: len(args)]), dict(zip(keys, values[len(args) :], strict=True))

            return [*args, *kwargs.values()], rebuild_all
        bound = signature.bind(*args, **kwargs)
        names = [name for name in self.input_args or () if name in bound.arguments]

        def rebuild_named(values: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            bound.arguments.update(zip(names, values, strict=True))
            return bound.args, bound.kwargs

        return [bound.arguments[name] for name in names], rebuild_named

    def _check_args(
        self,
        signature: inspect.Signature | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        vault: Vault | None,
        trace_id: str | None,
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | GuardResult:
        values, rebuild = self._guarded_values(signature, args, kwargs)
        deadline = self.input.deadline()
        per_value = []
        for value in values:
            results = []
            for text in _payload.texts(value):
                result = self.input.evaluate(text, "input", vault=vault, trace_id=trace_id, deadline=deadline)
                if not result.passed:
                    return result
                results.append(result)
            per_value.append(results)
        return self._rebuilt_args(values, per_value, rebuild, args, kwargs)

    async def _acheck_args(
        self,
        signature: inspect.Signature | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        vault: Vault | None,
        trace_id: str | None,
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | GuardResult:
        values, rebuild = self._guarded_values(signature, args, kwargs)
        deadline = self.input.deadline()
        per_value = []
        for value in values:
            results = []
            for text in _payload.texts(value):
                result = await self.input.aevaluate(
                    text, "input", vault=vault, trace_id=trace_id, deadline=deadline
                )
                if not result.passed:
                    return result
                results.append(result)
            per_value.append(results)
        return self._rebuilt_args(values, per_value, rebuild, args, kwargs)

    @staticmethod
    def _rebuilt_args(
        values: list[Any],
        per_value: list[list[GuardResult]],
        rebuild: Callable[[list[Any]], tuple[tuple[Any, ...], dict[str, Any]]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        changed = False
        new_values = []
        for value, results in zip(values, per_value, strict=True):
            old = _payload.texts(value)
            new = [r.text for r in results]
            if new != old:
                changed = True
                value = _payload.replace(value, new)
            new_values.append(value)
        # Untouched arguments go through as the very objects the caller passed.
        return rebuild(new_values) if changed else (args, kwargs)

    def _finish_output(self, value: Any, results: list[GuardResult], vault: Vault | None) -> Any:
        for result in results:
            if not result.passed:
                return self._blocked(merge(results, "output"))
        new = [r.text for r in results]
        if vault is not None and len(vault):
            new = [vault.restore(t) for t in new]
        return _payload.replace(value, new) if new != _payload.texts(value) else value

    def _blocked(self, result: GuardResult) -> Any:
        if self.replacement is _RAISE:
            raise GuardViolation(result)
        return self.replacement

    # --- streams ------------------------------------------------------------------------------------------

    def _guard_stream(
        self, source: Iterator[Any], vault: Vault | None, trace_id: str | None
    ) -> Iterator[Any]:
        stream = StreamWindow(window=self.window, stride=self.stride, vault=vault)
        try:
            for chunk in source:
                if stream.add(chunk):
                    yield from self._released(stream, self._check_window(stream, vault, trace_id))
            if stream.has_pending:
                yield from self._released(stream, self._check_window(stream, vault, trace_id))
            yield from stream.finish()
        except _StreamBlocked as stop:
            yield self._blocked(stop.result)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _check_window(self, stream: StreamWindow, vault: Vault | None, trace_id: str | None) -> GuardResult:
        return self.output.evaluate(stream.text(), "output", vault=vault, trace_id=trace_id)

    async def _acheck_window(
        self, stream: StreamWindow, vault: Vault | None, trace_id: str | None
    ) -> GuardResult:
        return await self.output.aevaluate(stream.text(), "output", vault=vault, trace_id=trace_id)

    @staticmethod
    def _released(stream: StreamWindow, result: GuardResult) -> list[Any]:
        if not result.passed:
            raise _StreamBlocked(result)
        chunks = stream.release(result)
        if chunks is None:
            refusal = CheckDecision("stream", "block", 1.0, "redaction cannot be applied to non-text chunks")
            raise _StreamBlocked(GuardResult(result.target, False, result.text, (*result.decisions, refusal)))
        return chunks


class _StreamBlocked(Exception):
    """Internal: unwinds a guarded stream to the point where it yields the block."""

    def __init__(self, result: GuardResult) -> None:
        super().__init__("stream blocked")
        self.result = result


@overload
def guard(fn: F, /) -> F: ...


@overload
def guard(
    fn: None = None,
    /,
    *,
    input: Iterable[CheckSpec] = ...,
    output: Iterable[CheckSpec] = ...,
    on_fail: Action | None = ...,
    fail_open: bool = ...,
    timeout: float = ...,
    vault: bool | Vault = ...,
    replacement: Any = ...,
    input_args: Sequence[str] | None = ...,
    window: int = ...,
    stride: int = ...,
) -> Guard: ...


def guard(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Guards a function's prompt and response; usable bare (``@veil.guard``) or configured.

    ``@veil.guard(input=["secrets", "pii"], output=["toxicity"], on_fail="block", fail_open=True,
    timeout=1.0)``. See :class:`Guard` for every option. Put ``@veil.observe`` above it so the decisions
    are recorded on the call's span.
    """
    configured = Guard(**options)
    return configured(fn) if fn is not None else configured
