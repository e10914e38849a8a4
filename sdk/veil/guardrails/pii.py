"""The ``"pii"`` and ``"secrets"`` checks, on the SDK's PII engine (:class:`veil.pii.Scrubber`).

Both replace what they find with the engine's typed placeholders (``[EMAIL_1]``, ``[API_KEY_1]``); the
guard decides whether that redaction is applied (``redact``), the call refused (``block``) or only noted
(``flag``). By default ``pii`` redacts and ``secrets`` blocks. With a vault, ``pii`` records each
placeholder's original value so the response can be restored (Anonymize/Deanonymize); secrets never go
into a vault.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from veil.guardrails._result import Action
from veil.guardrails.checks import Check, CheckContext, CheckOutcome, register_check
from veil.guardrails.vault import Vault
from veil.pii import PATTERN_ENTITIES, Finding, Scrubber, ScrubConfig
from veil.pii.entities import API_KEY, DEFAULT_NER_ENTITIES, JWT, PRIVATE_KEY, SECRET, URL

SECRET_ENTITIES: frozenset[str] = frozenset({API_KEY, JWT, PRIVATE_KEY, SECRET, URL})
"""Credentials: provider API keys, JWTs, private keys, keyword-anchored secrets, URLs with credentials."""

PII_ENTITIES: frozenset[str] = PATTERN_ENTITIES - SECRET_ENTITIES
"""Personal data the pattern tier finds: e-mail, phone, card, IBAN, IP, SSN, crypto wallet, MAC."""

# The engine's placeholders, e.g. [EMAIL_1], [CREDIT_CARD_12].
_PLACEHOLDER = re.compile(r"\[[A-Z_]{2,32}_[0-9]{1,9}\]")


class _EntityCheck(Check):
    """Shared body of the two checks: scrub with a scrubber limited to some entity types."""

    def __init__(self, entities: Iterable[str], *, ner: bool, on_fail: Action | None) -> None:
        super().__init__(on_fail=on_fail)
        entities = frozenset(entities)
        # JSON strings stay text: the guard redacts in place, so the result must align with the input.
        self._scrubber = Scrubber(
            ScrubConfig(
                pattern_entities=entities & PATTERN_ENTITIES,
                ner=ner,
                ner_entities=(entities - PATTERN_ENTITIES) if ner else DEFAULT_NER_ENTITIES,
                parse_json_strings=False,
            )
        )

    def _scrub(self, text: str, trace_key: str | None) -> tuple[str, tuple[Finding, ...]]:
        result = self._scrubber.scrub(text, trace_id=trace_key)
        return result.value, result.findings


def _reason(findings: tuple[Finding, ...]) -> str:
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.entity_type] = counts.get(finding.entity_type, 0) + finding.count
    return ", ".join(f"{entity} x{n}" for entity, n in sorted(counts.items()))


class Pii(_EntityCheck):
    """Personal data in the text. Redacts by default: the provider sees placeholders, never the values.

    Args:
        entities: Entity types to look for (default: every pattern PII type; add ``PERSON``,
            ``LOCATION``, ``NRP`` with ``ner=True``).
        ner: Also run the NER tier (needs the ``presidio`` extra; slower).
        on_fail: Overrides the guard's action.
    """

    name = "pii"
    default_action: Action = "redact"

    def __init__(
        self, *, entities: Iterable[str] | None = None, ner: bool = False, on_fail: Action | None = None
    ) -> None:
        if entities is None:
            entities = PII_ENTITIES | (DEFAULT_NER_ENTITIES if ner else frozenset())
        super().__init__(entities, ner=ner, on_fail=on_fail)

    def evaluate(self, text: str, ctx: CheckContext) -> CheckOutcome:
        # With a vault, number placeholders per vault, so one vault never sees one placeholder twice.
        key = ctx.vault.key if ctx.vault is not None else ctx.trace_id
        scrubbed, findings = self._scrub(text, key)
        if not findings:
            return CheckOutcome(violated=False, score=0.0)
        if ctx.vault is not None and ctx.target == "input":
            _remember(ctx.vault, text, scrubbed)
        return CheckOutcome(violated=True, score=1.0, sanitized=scrubbed, reason=_reason(findings))


class Secrets(_EntityCheck):
    """Credentials in the text (API keys, JWTs, private keys, assigned secrets). Blocks by default.

    Args:
        entities: Entity types that count as secrets (default :data:`SECRET_ENTITIES`).
        on_fail: Overrides the guard's action (``redact`` replaces them with placeholders).
    """

    name = "secrets"
    default_action: Action = "block"

    def __init__(self, *, entities: Iterable[str] = SECRET_ENTITIES, on_fail: Action | None = None) -> None:
        super().__init__(entities, ner=False, on_fail=on_fail)

    def evaluate(self, text: str, ctx: CheckContext) -> CheckOutcome:
        scrubbed, findings = self._scrub(text, ctx.trace_id)
        if not findings:
            return CheckOutcome(violated=False, score=0.0)
        return CheckOutcome(violated=True, score=1.0, sanitized=scrubbed, reason=_reason(findings))


def _remember(vault: Vault, original: str, scrubbed: str) -> None:
    """Stores placeholder -> value for each placeholder the scrubber put into ``scrubbed``.

    The scrubber only swaps entity spans for placeholders, so the text between placeholders is unchanged:
    matching ``scrubbed`` as a pattern (literal pieces, a group per placeholder) against ``original``
    recovers each value without the engine having to hand values out.
    """
    pieces = _PLACEHOLDER.split(scrubbed)
    placeholders = _PLACEHOLDER.findall(scrubbed)
    pattern = "(.+?)".join(re.escape(piece) for piece in pieces)
    match = re.fullmatch(pattern, original, re.DOTALL)
    if match is None:
        return  # the scrubber changed more than entity spans (a truncated text): nothing to restore
    for placeholder, value in zip(placeholders, match.groups(), strict=True):
        if value != placeholder:  # a placeholder that was already in the original text
            vault.add(placeholder, value)


register_check("pii", Pii)
register_check("secrets", Secrets)
