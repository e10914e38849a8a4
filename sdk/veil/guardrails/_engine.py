"""Runs a list of checks over one text under one deadline and turns their verdicts into decisions.

The evaluation loop is written once, as a generator that hands each *blocking* check (network, user
code) to its driver: the sync driver waits on a worker-thread future with the time left, the async driver
awaits the same future with ``asyncio.wait_for``. Either way nobody waits past the deadline; a check that
is late or raises is "unavailable", and ``fail_open`` decides whether that passes (flagged) or blocks.
Non-blocking checks (patterns, length) run inline: they are cheaper than a thread hop. Blocking checks
run in a copy of the caller's context, so spans they open nest under the guarded call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from veil._guarded import capture_internal_exceptions, record_failure
from veil.guardrails._result import ACTIONS, Action, CheckDecision, Decision, GuardResult, Target
from veil.guardrails._span import record_decisions
from veil.guardrails.checks import Check, CheckContext, CheckOutcome
from veil.guardrails.vault import Vault

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _worker_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The shared pool that runs blocking checks; created on first use, rebuilt in a forked child."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="veil-guard"
            )
        return _executor


def _forget_pool_after_fork() -> None:
    # The parent's worker threads do not exist in the child; a fresh pool starts on first use.
    global _executor, _executor_lock
    _executor = None
    _executor_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


@dataclass(frozen=True, slots=True)
class _Unavailable:
    """A check that did not answer in time or raised: ``cause`` is low-cardinality, ``reason`` for people."""

    cause: str
    reason: str

    @classmethod
    def from_exception(cls, exc: Exception) -> _Unavailable:
        return cls(type(exc).__name__, f"{type(exc).__name__}: {exc}")


_Step = Generator[tuple[Check, str, CheckContext], "CheckOutcome | _Unavailable", GuardResult]


@dataclass(frozen=True, slots=True)
class Policy:
    """A configured set of checks plus what to do about their violations.

    Attributes:
        checks: Run in order; each sees the text as redacted by the ones before it, and the first block
            stops the rest (so put local redacting checks such as ``"pii"`` before remote classifiers:
            the collector then never sees the raw values).
        on_fail: The action for every violation of a check that has no ``on_fail`` of its own; None
            means each check's default (``pii`` redacts, ``secrets`` blocks, ...).
        fail_open: When a check is unavailable: True passes and flags, False blocks.
        timeout: Seconds the whole evaluation of one text may take.
    """

    checks: tuple[Check, ...]
    on_fail: Action | None = None
    fail_open: bool = True
    timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.on_fail is not None and self.on_fail not in ACTIONS:
            raise ValueError(f"on_fail must be one of {sorted(ACTIONS)} or None; got {self.on_fail!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds; got {self.timeout!r}")

    def deadline(self) -> float:
        """``time.monotonic()`` plus ``timeout``: the deadline to share among the texts of one call."""
        return time.monotonic() + self.timeout

    def evaluate(
        self,
        text: str,
        target: Target,
        *,
        vault: Vault | None = None,
        trace_id: str | None = None,
        deadline: float | None = None,
    ) -> GuardResult:
        """Checks ``text`` on the calling thread, waiting at most ``timeout`` seconds in all.

        ``deadline`` (a ``time.monotonic()`` value) replaces ``now + timeout``, so that several texts of
        one call share one timeout.
        """
        steps = self._steps(text, target, vault, trace_id, deadline)
        try:
            check, current, ctx = next(steps)
            while True:
                future = _submit(check, current, ctx)
                try:
                    answer: CheckOutcome | _Unavailable = future.result(_left(ctx.deadline))
                except concurrent.futures.TimeoutError:
                    future.cancel()
                    answer = _Unavailable("timeout", f"no answer within {self.timeout:g} s")
                except Exception as exc:  # the check's own failure: it is unavailable, not our crash
                    answer = _Unavailable.from_exception(exc)
                check, current, ctx = steps.send(answer)
        except StopIteration as stop:
            return stop.value

    async def aevaluate(
        self,
        text: str,
        target: Target,
        *,
        vault: Vault | None = None,
        trace_id: str | None = None,
        deadline: float | None = None,
    ) -> GuardResult:
        """Like :meth:`evaluate`, but waits for blocking checks without blocking the event loop."""
        steps = self._steps(text, target, vault, trace_id, deadline)
        try:
            check, current, ctx = next(steps)
            while True:
                future = _submit(check, current, ctx)
                try:
                    answer: CheckOutcome | _Unavailable = await asyncio.wait_for(
                        asyncio.wrap_future(future), _left(ctx.deadline)
                    )
                except asyncio.TimeoutError:
                    answer = _Unavailable("timeout", f"no answer within {self.timeout:g} s")
                except Exception as exc:  # the check's own failure: it is unavailable, not our crash
                    answer = _Unavailable.from_exception(exc)
                check, current, ctx = steps.send(answer)
        except StopIteration as stop:
            return stop.value

    def _steps(
        self, text: str, target: Target, vault: Vault | None, trace_id: str | None, deadline: float | None
    ) -> _Step:
        if deadline is None:
            deadline = self.deadline()
        ctx = CheckContext(target=target, deadline=deadline, vault=vault, trace_id=trace_id)
        decisions: list[CheckDecision] = []
        blocked = False
        for check in self.checks:
            answer: CheckOutcome | _Unavailable
            if check.blocking:
                if _left(ctx.deadline) > 0:
                    answer = yield check, text, ctx
                else:
                    answer = _Unavailable("timeout", "deadline passed before the check started")
            else:
                try:
                    answer = check.evaluate(text, ctx)
                except Exception as exc:  # the check's own failure: it is unavailable, not our crash
                    answer = _Unavailable.from_exception(exc)
            decision, text = self._decide(check, answer, text)
            decisions.append(decision)
            if decision.decision == "block":
                blocked = True
                break
        result = GuardResult(target=target, passed=not blocked, text=text, decisions=tuple(decisions))
        with capture_internal_exceptions("guard.record"):
            record_decisions(result)
        return result

    def _decide(
        self, check: Check, answer: CheckOutcome | _Unavailable, text: str
    ) -> tuple[CheckDecision, str]:
        if isinstance(answer, _Unavailable):
            # Counted and logged once per (check, cause); the decision itself carries the reason.
            record_failure("guard.check", f"{check.name}:{answer.cause}")
            decision: Decision = "flag" if self.fail_open else "block"
            return CheckDecision(check.name, decision, 0.0, f"unavailable: {answer.reason}", True), text
        if not answer.violated:
            return CheckDecision(check.name, "pass", answer.score), text
        action: Action = check.on_fail or self.on_fail or check.default_action
        if action == "redact":
            if answer.sanitized is None:
                # This check cannot cut the violation out of the text; letting it through would be a pass.
                reason = f"{answer.reason} (cannot redact)"
                return CheckDecision(check.name, "block", answer.score, reason), text
            text = answer.sanitized
        return CheckDecision(check.name, action, answer.score, answer.reason), text


def _submit(check: Check, text: str, ctx: CheckContext) -> concurrent.futures.Future[CheckOutcome]:
    """Runs ``check`` on the pool in a copy of the caller's context (current span, ContextVars).

    One copy per check: a late check may still run in its copy while the next one starts.
    """
    return _worker_pool().submit(contextvars.copy_context().run, check.evaluate, text, ctx)


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def merge(results: Sequence[GuardResult], target: Target) -> GuardResult:
    """One result for several texts of one call: blocked if any was; decisions concatenated."""
    if len(results) == 1:
        return results[0]
    return GuardResult(
        target=target,
        passed=all(r.passed for r in results),
        text="\n".join(r.text for r in results),
        decisions=tuple(d for r in results for d in r.decisions),
    )
