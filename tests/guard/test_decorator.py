"""``@veil.guard`` on sync, async, generator and async-generator functions, with spans and the vault."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Iterator

import pytest

import veil.guardrails as vg
from veil.guardrails import Banned, GuardViolation

OPENAI_KEY = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF"


def test_sync_call_sees_the_redacted_prompt_and_user_sees_restored_reply() -> None:
    seen: list[object] = []

    @vg.guard(input=["secrets", "pii"], output=["pii"], vault=True)
    def chat(messages: list[dict[str, str]], model: str = "gpt-4o-mini") -> str:
        seen.append(messages)
        return "Sure, I will write to [EMAIL_1]."

    system = {"role": "system", "content": "Be brief."}
    messages = [system, {"role": "user", "content": "Mail jane@example.com"}]
    assert chat(messages) == "Sure, I will write to jane@example.com."
    assert seen == [[system, {"role": "user", "content": "Mail [EMAIL_1]"}]]
    assert messages[1]["content"] == "Mail jane@example.com"  # the caller's objects are not mutated


def test_without_a_vault_placeholders_stay_in_the_reply() -> None:
    @vg.guard(input=["pii"], output=[])
    def echo(prompt: str) -> str:
        return f"you said: {prompt}"

    assert echo("jane@example.com") == "you said: [EMAIL_1]"


def test_block_raises_guard_violation_before_the_call() -> None:
    calls = []

    @vg.guard(input=["secrets"], output=[])
    def chat(prompt: str) -> str:
        calls.append(prompt)
        return "ok"

    with pytest.raises(GuardViolation, match=r"guard blocked the input: secrets \(API_KEY x1\)") as info:
        chat(f"debug {OPENAI_KEY}")
    assert calls == []
    assert info.value.result.violations[0].check == "secrets"


def test_replacement_is_returned_instead_of_raising() -> None:
    @vg.guard(input=[], output=[Banned(substrings=["forbidden"])], replacement="I can't help with that.")
    def chat(prompt: str) -> str:
        return "this is forbidden"

    assert chat("hi") == "I can't help with that."


def test_flag_lets_the_call_through_unchanged() -> None:
    @vg.guard(input=["pii"], output=[], on_fail="flag")
    def chat(prompt: str) -> str:
        return prompt

    assert chat("jane@example.com") == "jane@example.com"


def test_input_args_limits_the_checked_parameters() -> None:
    @vg.guard(input=["pii"], output=[], input_args=["prompt"])
    def chat(prompt: str, user_email: str) -> tuple[str, str]:
        return prompt, user_email

    assert chat("hi a@example.com", user_email="b@example.com") == ("hi [EMAIL_1]", "b@example.com")
    with pytest.raises(ValueError, match=r"input_args \['nope'\] are not parameters"):
        vg.guard(input_args=["nope"])(lambda prompt: prompt)


def test_bare_decorator_uses_the_default_checks() -> None:
    @vg.guard
    def chat(prompt: str) -> str:
        return prompt

    assert chat("jane@example.com") == "[EMAIL_1]"
    with pytest.raises(GuardViolation):
        chat(OPENAI_KEY)


def test_async_function_is_guarded_and_stays_a_coroutine_function() -> None:
    @vg.guard(input=["pii"], output=[Banned(substrings=["secret plan"])], vault=True)
    async def chat(prompt: str) -> str:
        await asyncio.sleep(0)
        return f"noted {prompt}" if "plan" not in prompt else "the secret plan"

    assert inspect.iscoroutinefunction(chat)
    assert asyncio.run(chat("jane@example.com")) == "noted jane@example.com"
    with pytest.raises(GuardViolation, match="output: banned"):
        asyncio.run(chat("plan"))


def test_dict_responses_are_checked_in_their_content() -> None:
    @vg.guard(input=[], output=["secrets"])
    def chat(prompt: str) -> dict[str, str]:
        return {"role": "assistant", "content": f"use {OPENAI_KEY}"}

    with pytest.raises(GuardViolation, match="output: secrets"):
        chat("hi")


def test_decisions_are_span_events_and_blocks_mark_the_span(spans) -> None:
    tracer, exporter = spans

    @vg.guard(input=["secrets", "pii"], output=["pii"])
    def chat(prompt: str) -> str:
        return "fine"

    with tracer.start_as_current_span("llm"):
        chat("mail jane@example.com")
    with tracer.start_as_current_span("llm-blocked"), pytest.raises(GuardViolation):
        chat(OPENAI_KEY)

    ok, blocked = exporter.get_finished_spans()
    events = [(e.name, dict(e.attributes)) for e in ok.events]
    assert events == [
        ("veil.guard", {"veil.guard.check": "secrets", "veil.guard.decision": "pass", "veil.guard.score": 0.0,
                        "veil.guard.target": "input"}),
        ("veil.guard", {"veil.guard.check": "pii", "veil.guard.decision": "redact", "veil.guard.score": 1.0,
                        "veil.guard.target": "input", "veil.guard.reason": "EMAIL_ADDRESS x1"}),
        ("veil.guard", {"veil.guard.check": "pii", "veil.guard.decision": "pass", "veil.guard.score": 0.0,
                        "veil.guard.target": "output"}),
    ]  # fmt: skip
    assert "veil.guard.blocked" not in ok.attributes
    assert blocked.attributes["veil.guard.blocked"] is True
    assert [e.attributes["veil.guard.decision"] for e in blocked.events] == ["block"]


def test_functional_checks_record_on_the_current_span(spans) -> None:
    tracer, exporter = spans
    with tracer.start_as_current_span("manual"):
        vg.check_input("jane@example.com", checks=["pii"])
    (span,) = exporter.get_finished_spans()
    assert span.events[0].attributes["veil.guard.decision"] == "redact"


def test_generator_output_is_checked_chunk_by_chunk() -> None:
    @vg.guard(input=[], output=[Banned(substrings=["boom"])])
    def stream() -> Iterator[str]:
        yield "all "
        yield "fine"

    assert inspect.isgeneratorfunction(stream)
    assert list(stream()) == ["all ", "fine"]


def test_async_generator_output_is_checked_and_blocked() -> None:
    closed = []

    @vg.guard(input=[], output=[Banned(substrings=["boom"])])
    async def stream() -> AsyncIterator[str]:
        try:
            for chunk in ["tick ", "tick ", "bo", "om", " never"]:
                yield chunk
        finally:
            closed.append(True)

    async def consume() -> list[str]:
        got = []
        with pytest.raises(GuardViolation, match="output: banned"):
            async for chunk in stream():
                got.append(chunk)
        return got

    assert inspect.isasyncgenfunction(stream)
    assert asyncio.run(consume()) == ["tick ", "tick ", "bo"]
    assert closed == [True]


def test_generator_input_is_checked_at_first_next() -> None:
    @vg.guard(input=["secrets"], output=[])
    def stream(prompt: str) -> Iterator[str]:
        yield "x"

    gen = stream(OPENAI_KEY)
    with pytest.raises(GuardViolation, match="input: secrets"):
        next(gen)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="on_fail must be one of"):
        vg.guard(on_fail="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a positive"):
        vg.guard(timeout=0)
    with pytest.raises(ValueError, match="stride >= 1"):
        vg.guard(stride=0)


def _slow_check(text: str) -> bool:
    time.sleep(0.6)
    return False


def test_a_prompt_of_several_texts_waits_for_the_checks_one_timeout_in_all() -> None:
    messages = [{"role": "user", "content": f"message {i}"} for i in range(4)]

    @vg.guard(input=[_slow_check], output=[_slow_check], timeout=0.2)
    def chat(messages: list[dict[str, str]]) -> list[str]:
        return ["one", "two", "three"]

    @vg.guard(input=[_slow_check], output=[_slow_check], timeout=0.2)
    async def achat(messages: list[dict[str, str]]) -> list[str]:
        return ["one", "two", "three"]

    for call in (lambda: chat(messages), lambda: asyncio.run(achat(messages))):
        started = time.monotonic()
        assert call() == ["one", "two", "three"]  # fail_open: the late checks pass, flagged
        # One timeout for the prompt's four texts, one for the reply's three; not one per text.
        assert time.monotonic() - started < 0.2 * 2 + 0.15


def test_a_callable_check_runs_in_the_callers_context(spans) -> None:
    # A judge that traces itself (or reads a ContextVar) must see the guarded call's context on the
    # worker thread, so its spans nest under the call instead of starting traces of their own.
    tracer, exporter = spans

    def judge(text: str) -> bool:
        with tracer.start_as_current_span("judge"):
            return False

    @vg.guard(input=[judge], output=[judge])
    def chat(prompt: str) -> str:
        return "fine"

    async def achat_outer() -> None:
        with tracer.start_as_current_span("async call"):
            await achat("hello")

    @vg.guard(input=[judge], output=[judge])
    async def achat(prompt: str) -> str:
        return "fine"

    with tracer.start_as_current_span("call"):
        chat("hello")
    asyncio.run(achat_outer())
    finished = exporter.get_finished_spans()
    by_name: dict[str, list] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    (call,), (async_call,) = by_name["call"], by_name["async call"]
    judges = by_name["judge"]
    assert len(judges) == 4
    assert sorted(j.parent.span_id for j in judges) == sorted(
        [call.context.span_id] * 2 + [async_call.context.span_id] * 2
    )


def test_guard_above_classmethod_and_staticmethod_keeps_the_descriptor_and_checks() -> None:
    banned = Banned(substrings=["bad"])

    class Bot:
        @vg.guard(input=[], output=[banned])
        @classmethod
        def reply(cls, prompt: str) -> str:
            return f"bad {prompt}"

        @vg.guard(input=[], output=[banned])
        @staticmethod
        async def areply(prompt: str) -> str:
            return f"bad {prompt}"

    assert inspect.iscoroutinefunction(Bot.areply)
    with pytest.raises(GuardViolation):
        Bot.reply("x")
    with pytest.raises(GuardViolation):
        asyncio.run(Bot.areply("x"))
