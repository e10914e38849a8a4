"""Property: the scrubbed output never contains the original text of any detected entity."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from veil.pii import PATTERN_ENTITIES, Operator, Scrubber, ScrubConfig
from veil.pii.recognizers import find_patterns

ENTITY_VALUES = [
    "jane.doe@example.com",
    "UtaKortig@jourrapide.com",
    "+1-555-123-4567",
    "(555) 123-4567",
    "07700 063 966",
    "4111 1111 1111 1111",
    "378282246310005",
    "GB82 WEST 1234 5698 7654 32",
    "DE89370400440532013000",
    "192.168.10.254",
    "2001:db8:85a3::8a2e:370:7334",
    "123-45-6789",
    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "00:1A:2B:3C:4D:5E",
    "postgres://admin:s3cret@db.internal:5432/app",
    "sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "password=hunter2!x",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]

segments = st.one_of(
    st.sampled_from(ENTITY_VALUES),
    st.text(alphabet="abcXYZ0123456789 .-:@+()/_=\n", max_size=12),
    st.text(max_size=8),
)
texts = st.lists(
    st.tuples(segments, st.sampled_from(["", " ", ", ", "\n", "-", ".", ":", "x", "@"])), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(parts=texts, operator=st.sampled_from([Operator.PLACEHOLDER, Operator.MASK, Operator.DROP]))
def test_scrubbed_output_never_contains_a_detected_entity(
    parts: list[tuple[str, str]], operator: Operator
) -> None:
    text = "".join(segment + sep for segment, sep in parts)
    scrubber = Scrubber(ScrubConfig(default_operator=operator, parse_json_strings=False))
    out = scrubber.scrub(text).value
    for span in find_patterns(text, PATTERN_ENTITIES):
        assert text[span.start : span.end] not in out


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.sampled_from(ENTITY_VALUES), min_size=1, max_size=5))
def test_known_entities_are_always_detected_in_prose(values: list[str]) -> None:
    text = " and ".join(f"value {v} here" for v in values)
    out = Scrubber().scrub(text).value
    for value in values:
        assert value not in out


@settings(max_examples=300, deadline=None)
@given(parts=texts, compact=st.booleans())
def test_json_strings_scanned_whole_scrub_like_the_walk(parts: list[tuple[str, str]], compact: bool) -> None:
    # A message list as a JSON string (scanned whole, replaced in place when it can be) must come out
    # as the same structure as scrubbing the parsed list (the walk), and stay valid JSON.
    text = "".join(segment + sep for segment, sep in parts)
    messages = [{"role": "user", "parts": [{"type": "text", "content": text}]}]
    raw = json.dumps(messages, separators=(",", ":") if compact else None)
    whole = Scrubber().scrub(raw)
    walked = Scrubber().scrub(messages)
    assert json.loads(whole.value) == walked.value
    assert whole.findings == walked.findings
    if not walked.findings:
        assert whole.value is raw  # nothing found: the very string, not a re-serialised copy
