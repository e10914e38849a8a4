"""The one guard around SDK work: catch, count by (stage, reason), log once, never raise into the app.

Every piece of SDK code that touches the user's data or runs on the user's thread sits inside
`capture_internal_exceptions(stage)`. The user's own exceptions never pass through it: wrappers re-raise
those unchanged outside the guard.

Tests replace nothing here; they register a hook with `_add_capture_hook` (see tests/sdk/conftest.py),
which sees every captured exception, so a test fails when the SDK swallowed an error (sentry's pattern).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger("veil.internal")


class _DuplicateFilter(logging.Filter):
    """Drops a record identical to the one just before it, so a failing loop cannot flood the log."""

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple[object, ...] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        current = (record.module, record.levelno, record.msg, record.args)
        if current == self._last:
            return False
        self._last = current
        return True


_duplicate_filter = _DuplicateFilter()
logger.addFilter(_duplicate_filter)

_lock = threading.Lock()
_counts: Counter[tuple[str, str]] = Counter()
_hooks: list[Callable[[str, BaseException], None]] = []


def record_failure(stage: str, reason: str, exc: BaseException | None = None) -> None:
    """Counts one failure of `stage`; logs the first of each (stage, reason) pair at WARNING.

    Args:
        stage: Where it happened, e.g. "observe.start", "convert", "export", "scrub".
        reason: A low-cardinality cause, usually the exception's class name.
        exc: The exception, when there is one; passed to the test hooks and logged with its traceback.
    """
    with _lock:
        _counts[(stage, reason)] += 1
        first = _counts[(stage, reason)] == 1
    if first:
        logger.warning(
            "veil: internal failure in %s (%s); counted in veil.stats(), further ones are not logged",
            stage,
            reason,
            exc_info=exc if exc is not None else False,
        )
    if exc is not None:
        for hook in tuple(_hooks):
            hook(stage, exc)


class _Guard:
    """Context manager that suppresses and records any `Exception` raised inside it."""

    __slots__ = ("_stage",)

    def __init__(self, stage: str) -> None:
        self._stage = stage

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # Only Exception: KeyboardInterrupt, SystemExit and GeneratorExit must keep their meaning.
        if exc is None or not isinstance(exc, Exception):
            return False
        record_failure(self._stage, type(exc).__name__, exc)
        return True


_guards: dict[str, _Guard] = {}


def capture_internal_exceptions(stage: str) -> _Guard:
    """Returns a shared guard for `stage`: `with capture_internal_exceptions("convert"): ...`.

    The guard suppresses any `Exception` raised inside the block, counts it under (stage, exception class
    name) and logs the first occurrence. Guards are cached per stage, so the hot path allocates nothing.
    """
    guard = _guards.get(stage)
    if guard is None:
        guard = _guards.setdefault(stage, _Guard(stage))
    return guard


def failure_counts() -> dict[str, int]:
    """Returns the failures counted so far as {"stage/reason": count}."""
    with _lock:
        return {f"{stage}/{reason}": n for (stage, reason), n in _counts.items()}


def _add_capture_hook(hook: Callable[[str, BaseException], None]) -> Callable[[], None]:
    """Registers `hook(stage, exc)` for every captured exception; returns a function that removes it.

    For tests only: it lets a fixture fail a test whose code path made the SDK swallow an error.
    """
    _hooks.append(hook)
    return lambda: _hooks.remove(hook)


def _reset_counts() -> None:
    """Forgets every counted failure and the last log record, so the next one is logged again (tests)."""
    with _lock:
        _counts.clear()
    _duplicate_filter._last = None
