"""``veil.check_input`` / ``veil.check_output``: the guard as plain functions that return a result."""

from __future__ import annotations

from collections.abc import Iterable

from veil.guardrails._decorator import DEFAULT_INPUT_CHECKS, DEFAULT_OUTPUT_CHECKS
from veil.guardrails._engine import Policy
from veil.guardrails._result import Action, GuardResult
from veil.guardrails._span import current_trace_id
from veil.guardrails.checks import CheckSpec, resolve_checks
from veil.guardrails.vault import Vault


def _policy(checks: Iterable[CheckSpec], on_fail: Action | None, fail_open: bool, timeout: float) -> Policy:
    return Policy(resolve_checks(checks), on_fail=on_fail, fail_open=fail_open, timeout=timeout)


def _restored(result: GuardResult, vault: Vault | None) -> GuardResult:
    # On an output that passed, the vault puts back the values the input redaction took out.
    if result.passed and vault is not None and len(vault):
        restored = vault.restore(result.text)
        if restored != result.text:
            return GuardResult(result.target, result.passed, restored, result.decisions)
    return result


def check_input(
    text: str,
    *,
    checks: Iterable[CheckSpec] = DEFAULT_INPUT_CHECKS,
    on_fail: Action | None = None,
    fail_open: bool = True,
    timeout: float = 1.0,
    vault: Vault | None = None,
) -> GuardResult:
    """Checks a prompt; never raises on a violation (inspect ``result.passed``).

    Args:
        text: The prompt.
        checks: Names, check objects or callables, run in order.
        on_fail: The action for violations of checks without their own; None keeps each check's default.
        fail_open: Whether an unavailable check passes (flagged) or blocks.
        timeout: Seconds the checks may take in all.
        vault: Receives the values the PII check redacted, for :func:`check_output` to restore.

    Returns:
        The :class:`GuardResult`; ``result.text`` is the prompt to send on (redacted where asked).
    """
    policy = _policy(checks, on_fail, fail_open, timeout)
    return policy.evaluate(text, "input", vault=vault, trace_id=current_trace_id())


def check_output(
    text: str,
    *,
    checks: Iterable[CheckSpec] = DEFAULT_OUTPUT_CHECKS,
    on_fail: Action | None = None,
    fail_open: bool = True,
    timeout: float = 1.0,
    vault: Vault | None = None,
) -> GuardResult:
    """Checks a response; ``result.text`` has the vault's placeholders restored when it passed.

    Arguments as for :func:`check_input`.
    """
    policy = _policy(checks, on_fail, fail_open, timeout)
    return _restored(policy.evaluate(text, "output", vault=vault, trace_id=current_trace_id()), vault)


async def acheck_input(
    text: str,
    *,
    checks: Iterable[CheckSpec] = DEFAULT_INPUT_CHECKS,
    on_fail: Action | None = None,
    fail_open: bool = True,
    timeout: float = 1.0,
    vault: Vault | None = None,
) -> GuardResult:
    """:func:`check_input` for coroutines: waits on remote checks without blocking the event loop."""
    policy = _policy(checks, on_fail, fail_open, timeout)
    return await policy.aevaluate(text, "input", vault=vault, trace_id=current_trace_id())


async def acheck_output(
    text: str,
    *,
    checks: Iterable[CheckSpec] = DEFAULT_OUTPUT_CHECKS,
    on_fail: Action | None = None,
    fail_open: bool = True,
    timeout: float = 1.0,
    vault: Vault | None = None,
) -> GuardResult:
    """:func:`check_output` for coroutines."""
    policy = _policy(checks, on_fail, fail_open, timeout)
    result = await policy.aevaluate(text, "output", vault=vault, trace_id=current_trace_id())
    return _restored(result, vault)
