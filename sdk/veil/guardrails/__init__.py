"""Guardrails in the call path: check prompts before the model sees them and responses before the user does.

``@veil.guard(input=[...], output=[...], on_fail=..., fail_open=..., timeout=...)`` wraps sync, async and
streaming functions; :func:`check_input` and :func:`check_output` are the same checks as functions that
return a :class:`GuardResult`. Checks are named (``"pii"``, ``"secrets"``, ``"length"``, ``"toxicity"``,
``"bias"``), configured objects (``Banned(substrings=[...])``, ``Length(max_tokens=2000)``) or plain
callables. Each decision is recorded on the current span as a ``veil.guard`` event.
"""

from __future__ import annotations

from veil.guardrails._decorator import DEFAULT_INPUT_CHECKS, DEFAULT_OUTPUT_CHECKS, Guard, guard
from veil.guardrails._functional import acheck_input, acheck_output, check_input, check_output
from veil.guardrails._result import Action, CheckDecision, Decision, GuardResult, GuardViolation, Target
from veil.guardrails.checks import (
    Banned,
    CallableCheck,
    Check,
    CheckContext,
    CheckOutcome,
    Length,
    register_check,
)
from veil.guardrails.classifiers import Bias, ClassifierBackend, LocalClassifier, RemoteClassifier, Toxicity
from veil.guardrails.pii import PII_ENTITIES, SECRET_ENTITIES, Pii, Secrets
from veil.guardrails.vault import StreamRestorer, Vault

__all__ = [
    "DEFAULT_INPUT_CHECKS",
    "DEFAULT_OUTPUT_CHECKS",
    "PII_ENTITIES",
    "SECRET_ENTITIES",
    "Action",
    "Banned",
    "Bias",
    "CallableCheck",
    "Check",
    "CheckContext",
    "CheckDecision",
    "CheckOutcome",
    "ClassifierBackend",
    "Decision",
    "Guard",
    "GuardResult",
    "GuardViolation",
    "Length",
    "LocalClassifier",
    "Pii",
    "RemoteClassifier",
    "Secrets",
    "StreamRestorer",
    "Target",
    "Toxicity",
    "Vault",
    "acheck_input",
    "acheck_output",
    "check_input",
    "check_output",
    "guard",
    "register_check",
]
