"""What a guard evaluation returns: one decision per check run, the violations, the sanitized text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["block", "redact", "flag"]
Decision = Literal["pass", "block", "redact", "flag"]
Target = Literal["input", "output"]

ACTIONS: frozenset[str] = frozenset({"block", "redact", "flag"})


@dataclass(frozen=True, slots=True)
class CheckDecision:
    """One check's decision on one text.

    Attributes:
        check: The check's name (``"pii"``, ``"toxicity"``, a callable's name, ...).
        decision: ``"pass"``, or the action taken on a violation: ``"block"``, ``"redact"`` or ``"flag"``.
        score: The check's score in [0, 1] (1 = certain violation); 0.0 when it could not run.
        reason: Why it fired, for people (e.g. ``"EMAIL_ADDRESS x2"``); empty on pass.
        unavailable: True when the check could not run (timeout, collector down); the decision then
            follows ``fail_open``.
    """

    check: str
    decision: Decision
    score: float
    reason: str = ""
    unavailable: bool = False


@dataclass(frozen=True, slots=True)
class GuardResult:
    """The outcome of checking one text.

    Attributes:
        target: ``"input"`` or ``"output"``.
        passed: False when any check blocked; the call must not go on.
        text: The text after every redaction (equal to the original when nothing was redacted).
        decisions: Every check that ran, in order, including passes.
    """

    target: Target
    passed: bool
    text: str
    decisions: tuple[CheckDecision, ...]

    @property
    def violations(self) -> tuple[CheckDecision, ...]:
        """The decisions that were not a pass (blocked, redacted or flagged)."""
        return tuple(d for d in self.decisions if d.decision != "pass")

    @property
    def sanitized(self) -> str:
        """Alias of ``text``: the text with every redaction applied."""
        return self.text


class GuardViolation(Exception):
    """Raised instead of the guarded call (or stream) when a check blocks.

    Attributes:
        result: The :class:`GuardResult` that blocked; ``result.violations`` names the checks.
    """

    def __init__(self, result: GuardResult) -> None:
        self.result = result
        blocks = [d for d in result.decisions if d.decision == "block"]
        fired = ", ".join(f"{d.check} ({d.reason or f'score {d.score:.2f}'})" for d in blocks)
        super().__init__(f"guard blocked the {result.target}: {fired}")
