"""`veil.context(...)`: user, session, tags and metadata stamped on every span opened inside it.

The stamps live in one `ContextVar`, so they follow asyncio tasks and `contextvars.copy_context().run`
like OTel's own context. Nested contexts merge: inner ids win, tags accumulate, metadata keys override.
A span keeps a reference to the (immutable) `Stamps` current at its start; nothing is copied per span.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from veil._generators import StepHooks, wrap_async_generator, wrap_generator

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Stamps:
    """The identity and labels current in a context; immutable, shared by every span that sees it."""

    user_id: str | None = None
    session_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def merged(
        self,
        user_id: str | None,
        session_id: str | None,
        tags: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
    ) -> Stamps:
        """Returns these stamps with the given values layered on top."""
        new_tags = self.tags
        if tags:
            new_tags = self.tags + tuple(str(t) for t in tags if str(t) not in self.tags)
        new_metadata = self.metadata
        if metadata:
            new_metadata = MappingProxyType({**self.metadata, **{str(k): v for k, v in metadata.items()}})
        return Stamps(
            user_id=str(user_id) if user_id is not None else self.user_id,
            session_id=str(session_id) if session_id is not None else self.session_id,
            tags=new_tags,
            metadata=new_metadata,
        )


_STAMPS: contextvars.ContextVar[Stamps | None] = contextvars.ContextVar("veil_stamps", default=None)

current_stamps = _STAMPS.get


class context:
    """Stamps user, session, tags and metadata on every span opened inside it.

    Use as a context manager (`with veil.context(user_id="u1"): ...`) or a decorator
    (`@veil.context(session_id="s1")`, on sync and async functions, generators and async generators).
    Works before `veil.init()` too: the values are simply kept until spans exist to carry them. As a
    decorator one instance serves any number of concurrent calls; as a `with` block, use an instance in
    one thread or task at a time.

    Args:
        user_id: Becomes `user.id`.
        session_id: Becomes `session.id` and `gen_ai.conversation.id`.
        tags: Become `veil.tags` (a string array, merged with outer contexts' tags).
        metadata: Each key becomes `veil.metadata.<key>`.
    """

    __slots__ = ("_metadata", "_session_id", "_tags", "_tokens", "_user_id")

    def __init__(
        self,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(tags, str):
            raise TypeError("veil.context(tags=...) takes a list of strings, not a single string")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"veil.context(metadata=...) takes a mapping, not {type(metadata).__name__}")
        self._user_id = user_id
        self._session_id = session_id
        self._tags = tags
        self._metadata = metadata
        self._tokens: list[contextvars.Token[Stamps | None]] = []

    def _push(self) -> contextvars.Token[Stamps | None]:
        base = _STAMPS.get() or _EMPTY
        return _STAMPS.set(base.merged(self._user_id, self._session_id, self._tags, self._metadata))

    def __enter__(self) -> context:
        self._tokens.append(self._push())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _STAMPS.reset(self._tokens.pop())

    def _stamp_steps(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _StampSteps:
        # One decorated generator's stream; the stamps do not depend on its arguments.
        return _StampSteps(self)

    def __call__(self, func: F) -> F:
        """Decorator form: every call of `func` runs inside this context.

        A generator's (or async generator's) body runs inside it step by step, as `observe` runs a
        stream's body inside its span: the stamps are current while the body runs, not in the consumer
        between chunks.
        """
        if isinstance(func, (classmethod, staticmethod)):
            # Above `@classmethod` / `@staticmethod`: wrap the function inside, keep the descriptor.
            return type(func)(self(func.__func__))  # type: ignore[return-value]
        if inspect.isasyncgenfunction(func):
            return wrap_async_generator(func, self._stamp_steps)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(func):
            return wrap_generator(func, self._stamp_steps)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = self._push()
                try:
                    return await func(*args, **kwargs)
                finally:
                    _STAMPS.reset(token)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = self._push()
            try:
                return func(*args, **kwargs)
            finally:
                _STAMPS.reset(token)

        return wrapper  # type: ignore[return-value]


class _StampSteps(StepHooks):
    """Makes a decorating `context`'s stamps current while each step of a generator body runs."""

    __slots__ = ("_context",)

    def __init__(self, stamping: context) -> None:
        self._context = stamping

    def before_step(self) -> contextvars.Token[Stamps | None]:
        return self._context._push()

    def after_step(self, token: contextvars.Token[Stamps | None]) -> None:
        _STAMPS.reset(token)


_EMPTY = Stamps()
