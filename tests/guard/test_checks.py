"""Each check on its own, and each action through ``check_input``/``check_output``."""

from __future__ import annotations

import re

import pytest

import veil.guardrails as vg
from veil.guardrails import Banned, CheckOutcome, Length, Pii, Secrets

EMAIL_PROMPT = "Write to jane.doe@example.com about the invoice."
OPENAI_KEY = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF"


def test_length_counts_chars_and_tokens_and_truncates_on_redact() -> None:
    chars = vg.check_input("x" * 11, checks=[Length(max_chars=10, max_tokens=None)], on_fail="redact")
    assert chars.passed and chars.text == "x" * 10
    assert chars.decisions[0].decision == "redact" and "11 chars > 10" in chars.decisions[0].reason

    tokens = vg.check_input("one two three four", checks=[Length(max_tokens=3)])
    assert not tokens.passed and tokens.violations[0].check == "length"

    redacted = vg.check_input("one two three four", checks=[Length(max_tokens=3)], on_fail="redact")
    assert redacted.text == "one two three"

    short = vg.check_input("one two", checks=[Length(max_tokens=4)])
    assert short.passed and short.decisions[0].decision == "pass" and short.decisions[0].score == 0.5


def test_length_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="max_chars or max_tokens"):
        Length(max_chars=None, max_tokens=None)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        Length(max_tokens=0)


def test_banned_substrings_ignore_case_and_patterns_match() -> None:
    check = Banned(substrings=["Acme Corp", "acme"], patterns=[r"\bproject\s+x\b"])
    result = vg.check_input("Ask ACME CORP about Project X.", checks=[check], on_fail="redact")
    assert result.text == "Ask [REDACTED] about [REDACTED]."
    assert result.decisions[0].reason == "2 banned match(es)"
    assert vg.check_input("nothing to see", checks=[check]).passed
    blocked = vg.check_input("acme rocks", checks=[check])
    assert not blocked.passed and blocked.violations[0].decision == "block"


def test_banned_needs_a_list() -> None:
    with pytest.raises(ValueError, match="needs a substring or a pattern"):
        Banned()
    with pytest.raises(ValueError, match="'banned' needs its list"):
        vg.check_input("x", checks=["banned"])


def test_unknown_names_and_objects_are_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown check 'toxic'; known: .*toxicity"):
        vg.check_input("x", checks=["toxic"])
    with pytest.raises(TypeError, match="a check is a name"):
        vg.check_input("x", checks=[42])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="on_fail must be one of"):
        Length(on_fail="drop")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("returned", "violated", "score"),
    [(True, True, 1.0), (False, False, 0.0), (0.7, True, 0.7), (0.2, False, 0.2)],
)
def test_callables_return_bool_or_score(returned: object, violated: bool, score: float) -> None:
    def mentions_competitor(text: str) -> object:
        return returned

    result = vg.check_input("hi", checks=[mentions_competitor], on_fail="flag")
    decision = result.decisions[0]
    assert decision.check == "mentions_competitor"
    assert decision.decision == ("flag" if violated else "pass")
    assert decision.score == pytest.approx(score)


def test_callable_outcome_can_redact() -> None:
    def no_digits(text: str) -> CheckOutcome:
        cleaned = re.sub(r"\d", "#", text)
        return CheckOutcome(violated=cleaned != text, score=1.0, sanitized=cleaned, reason="digits")

    assert vg.check_input("call 555", checks=[no_digits], on_fail="redact").text == "call ###"


def test_a_failing_callable_is_unavailable_and_fail_open_decides() -> None:
    def broken(text: str) -> bool:
        raise ConnectionError("moderation API down")

    opened = vg.check_input("hi", checks=[broken], fail_open=True)
    assert opened.passed
    assert opened.decisions[0].decision == "flag" and opened.decisions[0].unavailable
    assert "ConnectionError: moderation API down" in opened.decisions[0].reason
    closed = vg.check_input("hi", checks=[broken], fail_open=False)
    assert not closed.passed and closed.decisions[0].decision == "block"


def test_a_callable_with_a_wrong_return_type_is_unavailable() -> None:
    result = vg.check_input("hi", checks=[lambda text: "yes"], fail_open=False)
    assert not result.passed and "TypeError" in result.decisions[0].reason


def test_coroutine_functions_are_refused_as_checks() -> None:
    async def remote(text: str) -> bool:
        return False

    with pytest.raises(TypeError, match="coroutine function"):
        vg.check_input("hi", checks=[remote])


def test_pii_redacts_by_default_and_reports_types_not_values() -> None:
    result = vg.check_input(EMAIL_PROMPT, checks=["pii"])
    assert result.passed
    assert result.text == "Write to [EMAIL_1] about the invoice."
    (decision,) = result.decisions
    assert (decision.check, decision.decision, decision.score) == ("pii", "redact", 1.0)
    assert decision.reason == "EMAIL_ADDRESS x1" and "jane" not in decision.reason


def test_pii_passes_clean_text_and_blocks_or_flags_when_told() -> None:
    assert vg.check_input("What is the capital of France?", checks=["pii"]).decisions[0].decision == "pass"
    assert not vg.check_input(EMAIL_PROMPT, checks=["pii"], on_fail="block").passed
    flagged = vg.check_input(EMAIL_PROMPT, checks=["pii"], on_fail="flag")
    assert flagged.passed and flagged.text == EMAIL_PROMPT and flagged.violations[0].decision == "flag"


def test_secrets_block_by_default_and_can_be_redacted() -> None:
    prompt = f"my key is {OPENAI_KEY}, why does it fail?"
    blocked = vg.check_input(prompt, checks=["secrets"])
    assert not blocked.passed and blocked.decisions[0].reason == "API_KEY x1"
    redacted = vg.check_input(prompt, checks=[Secrets(on_fail="redact")])
    assert redacted.passed and OPENAI_KEY not in redacted.text and "[API_KEY_1]" in redacted.text


def test_secrets_and_pii_do_not_overlap() -> None:
    assert vg.check_input(EMAIL_PROMPT, checks=["secrets"]).decisions[0].decision == "pass"
    assert vg.check_input(f"key {OPENAI_KEY}", checks=[Pii()]).decisions[0].decision == "pass"


def test_a_check_object_action_beats_the_guard_action() -> None:
    result = vg.check_input(EMAIL_PROMPT, checks=[Pii(on_fail="flag")], on_fail="block")
    assert result.passed and result.decisions[0].decision == "flag"


def test_checks_run_in_order_on_redacted_text_and_stop_at_the_first_block() -> None:
    seen: list[str] = []

    def spy(text: str) -> bool:
        seen.append(text)
        return False

    vg.check_input(EMAIL_PROMPT, checks=["pii", spy])
    assert seen == ["Write to [EMAIL_1] about the invoice."]
    result = vg.check_input(f"{OPENAI_KEY}", checks=["secrets", spy])
    assert [d.check for d in result.decisions] == ["secrets"] and len(seen) == 1


def test_output_redaction_cannot_apply_to_a_classifier_verdict() -> None:
    def toxic(text: str) -> float:
        return 0.9

    result = vg.check_output("whatever", checks=[toxic], on_fail="redact")
    assert not result.passed
    assert result.decisions[0].decision == "block" and "cannot redact" in result.decisions[0].reason


def test_vault_restores_the_values_check_input_redacted() -> None:
    vault = vg.Vault()
    sent = vg.check_input("Email jane@example.com and bob@example.org", checks=["pii"], vault=vault)
    assert sent.text == "Email [EMAIL_1] and [EMAIL_2]"
    reply = vg.check_output("Done: wrote to [EMAIL_2], cc [EMAIL_1].", checks=["pii"], vault=vault)
    assert reply.text == "Done: wrote to bob@example.org, cc jane@example.com."


def test_a_shared_vault_numbers_placeholders_across_calls_without_collisions() -> None:
    vault = vg.Vault()
    first = vg.check_input("a@example.com", checks=["pii"], vault=vault, timeout=5)
    second = vg.check_input("b@example.com and a@example.com", checks=["pii"], vault=vault, timeout=5)
    assert first.text == "[EMAIL_1]" and second.text == "[EMAIL_2] and [EMAIL_1]"
    assert vault.restore("[EMAIL_1] [EMAIL_2]") == "a@example.com b@example.com"


def test_vault_refuses_a_placeholder_with_two_values() -> None:
    vault = vg.Vault()
    vault.add("[EMAIL_1]", "a@example.com")
    vault.add("[EMAIL_1]", "a@example.com")
    with pytest.raises(ValueError, match="already stands for another value"):
        vault.add("[EMAIL_1]", "b@example.com")


def test_stream_restorer_holds_back_split_placeholders() -> None:
    vault = vg.Vault()
    vault.add("[EMAIL_1]", "jane@example.com")
    vault.add("[EMAIL_10]", "ten@example.com")
    restorer = vault.restorer()
    out = [restorer.feed(chunk) for chunk in ["Hi [EM", "AIL_1", "]! and [EMAIL_1", "0] bye"]]
    out.append(restorer.flush())
    assert "".join(out) == "Hi jane@example.com! and ten@example.com bye"
    assert out[0] == "Hi "
