"""Streamed responses: the sliding window, each action, the vault on split placeholders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import veil.guardrails as vg
from veil.guardrails import Banned, GuardViolation


def _source(chunks: list[object], closed: list[bool]) -> Iterator[object]:
    try:
        yield from chunks
    finally:
        closed.append(True)


def test_a_violation_split_across_chunks_is_seen_by_the_window_and_stops_the_stream() -> None:
    closed: list[bool] = []

    @vg.guard(input=[], output=[Banned(substrings=["rm -rf /"])], window=4)
    def stream() -> Iterator[object]:
        return _source(["run ", "rm -", "rf /", " now", " more"], closed)

    got = []
    with pytest.raises(GuardViolation, match="output: banned"):
        for chunk in stream():
            got.append(chunk)
    assert got == ["run ", "rm -"]
    assert closed == [True]  # the provider's stream is closed, not left dangling


def test_stride_holds_chunks_until_they_are_checked_together() -> None:
    @vg.guard(input=[], output=[Banned(substrings=["rm -rf /"])], stride=2, replacement="[stopped]")
    def stream() -> Iterator[str]:
        yield from ["run ", "rm -", "rf /", " now"]

    assert list(stream()) == ["run ", "rm -", "[stopped]"]

    @vg.guard(input=[], output=[Banned(substrings=["rm -rf /"])], stride=4, replacement="[stopped]")
    def whole() -> Iterator[str]:
        yield from ["run ", "rm -", "rf /", " now"]

    assert list(whole()) == ["[stopped]"]  # nothing of the violating text got out


def test_redact_rewrites_the_chunk_and_the_stream_goes_on() -> None:
    @vg.guard(input=[], output=[Banned(substrings=["acme"])], on_fail="redact")
    def stream() -> Iterator[str]:
        yield from ["we ", "like acme", " a lot", " really"]

    assert "".join(stream()) == "we like [REDACTED] a lot really"


def test_redact_straddling_a_released_chunk_replaces_only_what_is_left() -> None:
    @vg.guard(input=[], output=[Banned(substrings=["acme"])], on_fail="redact")
    def stream() -> Iterator[str]:
        yield from ["we like ac", "me a lot"]

    assert list(stream()) == ["we like ac", "[REDACTED] a lot"]


def test_flag_lets_the_stream_through_and_records_each_window(spans) -> None:
    tracer, exporter = spans

    @vg.guard(input=[], output=[Banned(substrings=["acme"])], on_fail="flag")
    def stream() -> Iterator[str]:
        yield from ["ac", "me", "!"]

    with tracer.start_as_current_span("stream"):
        assert list(stream()) == ["ac", "me", "!"]
    (span,) = exporter.get_finished_spans()
    assert [e.attributes["veil.guard.decision"] for e in span.events] == ["pass", "flag", "flag"]


def test_vault_restores_placeholders_split_across_chunks() -> None:
    prompts = []

    @vg.guard(input=["pii"], output=["pii"], vault=True)
    def stream(prompt: str) -> Iterator[str]:
        prompts.append(prompt)
        yield from ["Writing to [EMA", "IL_1", "] now."]

    assert "".join(stream("email jane@example.com")) == "Writing to jane@example.com now."
    assert prompts == ["email [EMAIL_1]"]


def test_dict_chunks_are_checked_and_redacted_in_their_content() -> None:
    @vg.guard(input=[], output=[Banned(substrings=["acme"])], on_fail="redact")
    def stream() -> Iterator[dict[str, str]]:
        yield {"type": "delta", "text": "hello "}
        yield {"type": "delta", "text": "acme"}

    assert list(stream()) == [{"type": "delta", "text": "hello "}, {"type": "delta", "text": "[REDACTED]"}]


def test_redaction_that_cannot_be_put_back_into_chunks_blocks() -> None:
    @vg.guard(input=[], output=[Banned(substrings=["acme"])], on_fail="redact", stride=2)
    def stream() -> Iterator[dict[str, str]]:
        yield {"text": "ac"}
        yield {"text": "me"}

    with pytest.raises(GuardViolation, match="redaction cannot be applied to non-text chunks"):
        list(stream())


def test_a_plain_function_returning_a_generator_is_guarded_too() -> None:
    def provider() -> Iterator[str]:
        yield from ["bad ", "word"]

    @vg.guard(input=[], output=[Banned(substrings=["bad word"])], replacement="[removed]")
    def chat() -> Iterator[str]:
        return provider()

    assert list(chat()) == ["bad ", "[removed]"]
