"""The check interface and the checks that need nothing but the text: length, banned content, callables.

A check looks at one text and says whether it violates, how strongly (a score in [0, 1]) and, when it can,
what the text looks like with the violation removed. What happens on a violation (block, redact, flag) is
not the check's business: the guard decides from ``on_fail``. Checks must be thread-safe; one instance is
shared by every call of a decorated function.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from veil.guardrails._result import ACTIONS, Action, Target

if TYPE_CHECKING:
    from veil.guardrails.vault import Vault


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a check may know about the text besides the text itself.

    Attributes:
        target: ``"input"`` (a prompt) or ``"output"`` (a response).
        deadline: ``time.monotonic()`` value by which the whole evaluation must be done; checks that wait
            (network, models) must not wait past it.
        vault: Where the PII check keeps placeholder -> value pairs, when the guard restores them.
        trace_id: The current trace, so redaction placeholders are consistent within it.
    """

    target: Target
    deadline: float
    vault: Vault | None = None
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """One check's verdict on one text.

    Attributes:
        violated: True when the text breaks the check.
        score: Strength in [0, 1]; 1 is a certain violation.
        sanitized: The text with the violation removed, or None when this check cannot redact (a
            ``redact`` action then blocks instead).
        reason: A short, value-free explanation (never echo the offending content: it may be PII).
    """

    violated: bool
    score: float
    sanitized: str | None = None
    reason: str = ""


class Check(ABC):
    """Base class of every check.

    Subclasses set ``name`` and ``default_action`` and implement :meth:`evaluate`. Set ``blocking`` when
    the check may wait (network, user code): the guard then runs it on a worker thread and stops waiting at
    the deadline.

    Args:
        on_fail: The action for this check's violations, overriding the guard's ``on_fail``.
    """

    name: str = "check"
    default_action: Action = "block"
    blocking: bool = False

    def __init__(self, *, on_fail: Action | None = None) -> None:
        if on_fail is not None and on_fail not in ACTIONS:
            raise ValueError(f"on_fail must be one of {sorted(ACTIONS)}; got {on_fail!r}")
        self.on_fail = on_fail

    @abstractmethod
    def evaluate(self, text: str, ctx: CheckContext) -> CheckOutcome:
        """Checks ``text``. May raise; the guard treats an exception as "check unavailable"."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, on_fail={self.on_fail!r})"


# A word, or one punctuation mark: close to what BPE tokenizers produce for English, and dependency-free.
_TOKEN = re.compile(r"\w+|[^\w\s]")


class Length(Check):
    """Prompt or response length limit, in characters and/or tokens.

    Redaction truncates the text to the limit.

    Args:
        max_chars: Longest allowed text in characters.
        max_tokens: Longest allowed text in tokens.
        count_tokens: Returns the end offset of each token of a text; defaults to words and punctuation
            marks (pass a tokenizer's offsets for exact model tokens).
        on_fail: Overrides the guard's action.
    """

    name = "length"

    def __init__(
        self,
        *,
        max_chars: int | None = None,
        max_tokens: int | None = 4096,
        count_tokens: Callable[[str], list[int]] | None = None,
        on_fail: Action | None = None,
    ) -> None:
        super().__init__(on_fail=on_fail)
        if max_chars is None and max_tokens is None:
            raise ValueError("Length needs max_chars or max_tokens")
        for label, limit in (("max_chars", max_chars), ("max_tokens", max_tokens)):
            if limit is not None and limit < 1:
                raise ValueError(f"{label} must be >= 1; got {limit}")
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self._token_ends = count_tokens or (lambda text: [m.end() for m in _TOKEN.finditer(text)])

    def evaluate(self, text: str, ctx: CheckContext) -> CheckOutcome:
        cut = len(text)
        ratio = 0.0
        reasons = []
        if self.max_chars is not None:
            ratio = max(ratio, len(text) / self.max_chars)
            if len(text) > self.max_chars:
                cut = self.max_chars
                reasons.append(f"{len(text)} chars > {self.max_chars}")
        if self.max_tokens is not None:
            ends = self._token_ends(text)
            ratio = max(ratio, len(ends) / self.max_tokens)
            if len(ends) > self.max_tokens:
                cut = min(cut, ends[self.max_tokens - 1])
                reasons.append(f"{len(ends)} tokens > {self.max_tokens}")
        if not reasons:
            return CheckOutcome(violated=False, score=min(ratio, 1.0))
        return CheckOutcome(violated=True, score=1.0, sanitized=text[:cut], reason="; ".join(reasons))


class Banned(Check):
    """Banned substrings and regular expressions.

    Redaction replaces each match with ``replacement``.

    Args:
        substrings: Literal strings that must not appear.
        patterns: Regular expressions (strings or compiled) that must not match.
        case_sensitive: Whether substrings and string patterns match case-sensitively (compiled patterns
            keep their own flags).
        replacement: What a match becomes when redacted.
        on_fail: Overrides the guard's action.
    """

    name = "banned"

    def __init__(
        self,
        *,
        substrings: Iterable[str] = (),
        patterns: Iterable[str | re.Pattern[str]] = (),
        case_sensitive: bool = False,
        replacement: str = "[REDACTED]",
        on_fail: Action | None = None,
    ) -> None:
        super().__init__(on_fail=on_fail)
        flags = 0 if case_sensitive else re.IGNORECASE
        alternatives = [re.escape(s) for s in substrings if s]
        compiled = [re.compile(p, flags) if isinstance(p, str) else p for p in patterns]
        if not alternatives and not compiled:
            raise ValueError("Banned needs a substring or a pattern, e.g. Banned(substrings=['acme'])")
        # Longest first, so that "foo bar" wins over "foo" and the whole phrase is redacted.
        alternatives.sort(key=len, reverse=True)
        self._regexes = ([re.compile("|".join(alternatives), flags)] if alternatives else []) + compiled
        self.replacement = replacement

    def evaluate(self, text: str, ctx: CheckContext) -> CheckOutcome:
        hits = 0
        sanitized = text
        for regex in self._regexes:
            sanitized, n = regex.subn(self.replacement, sanitized)
            hits += n
        if not hits:
            return CheckOutcome(violated=False, score=0.0)
        return CheckOutcome(violated=True, score=1.0, sanitized=sanitized, reason=f"{hits} banned match(es)")


CheckResult = bool | float | CheckOutcome


class CallableCheck(Check):
    """Wraps a user function ``fn(text) -> bool | float | CheckOutcome`` as a check.

    ``True`` (or a score >= ``threshold``) means the text violates. User code may be slow, so the guard
    runs it on a worker thread under the deadline.

    Args:
        fn: The function; its ``__name__`` names the check unless ``name`` is given.
        name: The check's name in decisions and on spans.
        threshold: Score at or above which a float result is a violation.
        on_fail: Overrides the guard's action.
    """

    blocking = True

    def __init__(
        self,
        fn: Callable[[str], CheckResult],
        *,
        name: str | None = None,
        threshold: float = 0.5,
        on_fail: Action | None = None,
    ) -> None:
        super().__init__(on_fail=on_fail)
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"check {fn!r} is a coroutine function; guard checks must be plain callables")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.threshold = threshold

    def evaluate(self, text: str, ctx: CheckContext) -> CheckOutcome:
        result = self.fn(text)
        if isinstance(result, CheckOutcome):
            return result
        if isinstance(result, bool):
            return CheckOutcome(violated=result, score=1.0 if result else 0.0)
        if isinstance(result, (int, float)):
            score = float(result)
            return CheckOutcome(violated=score >= self.threshold, score=min(max(score, 0.0), 1.0))
        raise TypeError(
            f"check {self.name!r} returned {type(result).__name__}; expected bool, float or CheckOutcome"
        )


# Builders of the checks that can be named by a string, and the one default instance built per name
# (checks are thread-safe, and some, like the PII engine, are costly to build).
_builders: dict[str, Callable[[], Check]] = {}
_named: dict[str, Check] = {}


def register_check(name: str, builder: Callable[[], Check]) -> None:
    """Makes ``name`` usable in ``input=[...]``/``output=[...]``; ``builder()`` makes its default instance."""
    _builders[name] = builder
    _named.pop(name, None)


def _no_default_banned() -> Check:
    raise ValueError(
        "'banned' needs its list: pass veil.guardrails.Banned(substrings=[...], patterns=[...]), not the name"
    )


register_check("length", Length)
register_check("banned", _no_default_banned)

CheckSpec = str | Check | Callable[[str], CheckResult]


def _named_check(name: str) -> Check:
    check = _named.get(name)
    if check is None:
        builder = _builders.get(name)
        if builder is None:
            raise ValueError(f"unknown check {name!r}; known: {', '.join(sorted(_builders))}")
        # Two threads may both build it; one instance wins and the other is dropped, which is harmless.
        check = _named.setdefault(name, builder())
    return check


def resolve_checks(specs: Iterable[CheckSpec]) -> tuple[Check, ...]:
    """Turns names, check objects and callables into check objects.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
        TypeError: for anything that is neither a name, a :class:`Check` nor a callable.
    """
    if isinstance(specs, (str, Check)) or callable(specs):
        specs = [specs]  # a lone check is a common slip: input="pii"
    checks: list[Check] = []
    for spec in specs:
        if isinstance(spec, Check):
            checks.append(spec)
        elif isinstance(spec, str):
            checks.append(_named_check(spec))
        elif callable(spec):
            checks.append(CallableCheck(spec))
        else:
            raise TypeError(
                f"a check is a name, a veil.guardrails.Check or a callable; got {type(spec).__name__}"
            )
    return tuple(checks)
