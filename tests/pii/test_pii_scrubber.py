"""Scrubber behaviour: operators, per-trace placeholders, structure walking, limits, configuration errors."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys

import pytest

from veil.pii import Finding, Operator, Scrubber, ScrubConfig, scrub
from veil.pii.operators import (
    COLLECTOR_TAG_CHARS,
    REPLACEMENT,
    PlaceholderRegistry,
    collector_placeholder,
    pseudonym,
)
from veil.pii.scrubber import DEPTH_MARKER, TRUNCATION_MARKER


def test_convenience_scrub_returns_value_and_findings_without_values() -> None:
    result = scrub("mail jane@example.com, card 4111 1111 1111 1111")
    assert result.value == "mail [EMAIL_1], card [CREDIT_CARD_1]"
    assert result.findings == (Finding("CREDIT_CARD", 1, "pattern"), Finding("EMAIL_ADDRESS", 1, "pattern"))
    assert "jane" not in repr(result.findings)


def test_placeholders_are_consistent_within_a_trace_and_independent_across_traces() -> None:
    s = Scrubber()
    first = s.scrub("from a@x.com to b@x.com", trace_id="t1").value
    second = s.scrub("reply to B@X.COM then a@x.com", trace_id="t1").value
    other = s.scrub("only b@x.com", trace_id="t2").value
    assert first == "from [EMAIL_1] to [EMAIL_2]"
    assert second == "reply to [EMAIL_2] then [EMAIL_1]"  # e-mail addresses compare case-insensitively
    assert other == "only [EMAIL_1]"


def test_without_trace_id_numbering_is_per_call() -> None:
    s = Scrubber()
    assert s.scrub("a@x.com b@x.com a@x.com").value == "[EMAIL_1] [EMAIL_2] [EMAIL_1]"
    assert s.scrub("b@x.com").value == "[EMAIL_1]"


def _tag(placeholder: str) -> str:
    """``3f9a1b20d4`` of ``[EMAIL_c3f9a1b20d4]``."""
    return placeholder.rsplit("_c", 1)[1].rstrip("]")


def test_collector_placeholders_are_keyed_tags_in_their_own_namespace() -> None:
    key = b"k" * 32
    collector = Scrubber(ScrubConfig(collector_placeholder_key=key, operators={"US_SSN": "mask"}))
    first = collector.scrub("a@x.com, SSN 123-45-6789, b@x.com", trace_id="t1").value
    second = collector.scrub("[EMAIL_1] wrote to B@X.com", trace_id="t1").value
    a, b = collector_placeholder(key, "t1", "EMAIL_ADDRESS", "a@x.com"), REPLACEMENT.findall(first)[1]
    assert first == f"{a}, SSN ***********, {b}"  # other operators are unaffected
    assert a != b and re.fullmatch(r"\[EMAIL_c[0-9a-f]{10}\]", a) and len(_tag(a)) == COLLECTOR_TAG_CHARS
    assert second == f"[EMAIL_1] wrote to {b}"  # an SDK placeholder is left alone; B@X.com is b@x.com
    assert collector.scrub("b@x.com", trace_id="t2").value not in (a, b)  # another trace, another tag
    assert Scrubber().scrub("a@x.com", trace_id="t1").value == "[EMAIL_1]"  # the SDK's numbering is unchanged


def test_collector_placeholders_agree_between_scrubbers_with_the_same_key_only() -> None:
    text = "mail a@x.com or b@x.com, call 555-123-4567"
    one, two = (Scrubber(ScrubConfig(collector_placeholder_key=b"k" * 32)) for _ in range(2))
    other_key = Scrubber(ScrubConfig(collector_placeholder_key=b"j" * 32))
    assert one.scrub(text, trace_id="t").value == two.scrub(text, trace_id="t").value
    assert set(REPLACEMENT.findall(one.scrub(text, trace_id="t").value)).isdisjoint(
        REPLACEMENT.findall(other_key.scrub(text, trace_id="t").value)
    )
    # Without a trace id, values share one namespace (there is no trace to keep them apart).
    assert one.scrub("a@x.com").value == two.scrub("a@x.com").value
    with pytest.raises(ValueError, match="must not be empty"):
        ScrubConfig(collector_placeholder_key=b"")


def test_collector_tags_are_keyed_and_never_hold_the_value_or_an_unkeyed_hash_of_it() -> None:
    key = b"k" * 32
    for entity_type, value, normalized in (
        ("US_SSN", "123-45-6789", "123456789"),
        ("EMAIL_ADDRESS", "Jane@Example.com", "jane@example.com"),
        ("PHONE_NUMBER", "555 123 4567", "5551234567"),
    ):
        tag = _tag(collector_placeholder(key, "t", entity_type, value))
        assert normalized not in tag and value not in tag
        message = f"placeholder\x00t\x00{entity_type}\x00{normalized}"
        unkeyed = [
            hashlib.new(name, data.encode()).hexdigest()
            for name in ("sha256", "sha1", "md5", "blake2b")
            for data in (normalized, value, f"{entity_type}\x00{normalized}", message)
        ]
        assert not any(tag in digest for digest in unkeyed)
        assert tag == hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:COLLECTOR_TAG_CHARS]


def test_replacement_pattern_matches_what_the_operators_write() -> None:
    secret = b"k" * 32
    written = [
        PlaceholderRegistry().for_trace("t").placeholder("CREDIT_CARD", "4111111111111111"),
        collector_placeholder(secret, "t", "CREDIT_CARD", "4111111111111111"),
        "[CREDIT_CARD_c1]",  # numbered by collectors before their placeholders had tags
        "[PHONE_c0123456789]",  # a tag of digits only
        pseudonym(secret, "EMAIL_ADDRESS", "a@x.com"),
    ]
    assert written[0] == "[CREDIT_CARD_1]"
    assert all(REPLACEMENT.fullmatch(text) for text in written)
    rejected = (
        "[EMAIL_C1]",
        "[EMAIL_x1]",
        "[email_1]",
        "[EMAIL_c]",
        "[EMAIL_c3F9A1B20D4]",
        "[EMAIL_c3f9a1b20]",
    )
    assert not any(REPLACEMENT.search(t) for t in rejected)


def test_placeholder_registry_is_bounded() -> None:
    registry = PlaceholderRegistry(max_traces=2, max_values_per_trace=1)
    registry.for_trace("a")
    registry.for_trace("b")
    registry.for_trace("c")
    assert len(registry) == 2
    trace_map = registry.for_trace("c")
    assert trace_map.placeholder("EMAIL_ADDRESS", "x@y.com") == "[EMAIL_1]"
    assert trace_map.placeholder("EMAIL_ADDRESS", "z@y.com") == "[EMAIL_2]"  # beyond the cap: fresh number
    assert trace_map.placeholder("EMAIL_ADDRESS", "z@y.com") == "[EMAIL_3]"  # ... and not remembered
    assert trace_map.placeholder("EMAIL_ADDRESS", "x@y.com") == "[EMAIL_1]"


def test_mask_operator_keeps_length() -> None:
    s = Scrubber(ScrubConfig(operators={"CREDIT_CARD": "mask"}, mask_char="#"))
    assert s.scrub("card 4111111111111111.").value == "card ################."


def test_drop_operator_removes_the_value() -> None:
    s = Scrubber(ScrubConfig(default_operator=Operator.DROP))
    assert s.scrub("ssn 123-45-6789 ok").value == "ssn  ok"


def test_pseudonym_is_keyed_stable_and_not_the_value() -> None:
    s = Scrubber(ScrubConfig(default_operator="pseudonym", pseudonym_secret="k1"))
    a = s.scrub("a@x.com", trace_id="t1").value
    b = s.scrub("A@X.com", trace_id="t2").value
    other_key = (
        Scrubber(ScrubConfig(default_operator="pseudonym", pseudonym_secret="k2")).scrub("a@x.com").value
    )
    assert a == b == pseudonym(b"k1", "EMAIL_ADDRESS", "a@x.com")
    assert a.startswith("[EMAIL:") and len(a) == len("[EMAIL:]") + 16
    assert other_key != a


def test_structures_keep_keys_and_shape() -> None:
    tool_args = json.dumps({"to": "jane@example.com", "amount": 5, "card": 4111111111111111})
    value = {
        "messages": [
            {"role": "user", "parts": [{"type": "text", "content": "I'm jane@example.com"}]},
            ("tuple", "call +1-555-123-4567"),
        ],
        "tool": {"arguments": tool_args, "ok": True, "ratio": 0.5, "none": None, "count": 12},
        "jane@example.com": "keys are kept",
    }
    result = Scrubber().scrub(value, trace_id="t")
    out = result.value
    assert out["messages"][0] == {"role": "user", "parts": [{"type": "text", "content": "I'm [EMAIL_1]"}]}
    assert out["messages"][1] == ("tuple", "call [PHONE_1]")
    assert json.loads(out["tool"]["arguments"]) == {"to": "[EMAIL_1]", "amount": 5, "card": "[CREDIT_CARD_1]"}
    assert out["tool"]["ok"] is True and out["tool"]["ratio"] == 0.5 and out["tool"]["none"] is None
    assert out["tool"]["count"] == 12
    assert out["jane@example.com"] == "keys are kept"
    assert dict((f.entity_type, f.count) for f in result.findings) == {
        "EMAIL_ADDRESS": 2,
        "PHONE_NUMBER": 1,
        "CREDIT_CARD": 1,
    }


def test_invalid_json_string_is_scanned_as_text() -> None:
    assert Scrubber().scrub('{"to": "a@x.com", broken').value == '{"to": "[EMAIL_1]", broken'


def test_depth_limit_replaces_deep_nesting() -> None:
    deep: object = "a@x.com"
    for _ in range(10):
        deep = [deep]
    out = Scrubber(ScrubConfig(max_depth=3)).scrub(deep).value
    assert out == [[[[DEPTH_MARKER]]]]


def test_deeply_nested_json_string_does_not_recurse_without_bound() -> None:
    text = "[" * 5000 + '"a@x.com"' + "]" * 5000  # beyond json's recursion limit: scanned as text
    assert Scrubber().scrub(text).value == "[" * 5000 + '"[EMAIL_1]"' + "]" * 5000


def test_long_text_is_truncated_before_scanning() -> None:
    text = "x" * 100 + " a@x.com"
    out = Scrubber(ScrubConfig(max_text_chars=50)).scrub(text).value
    assert out == "x" * 50 + TRUNCATION_MARKER


def test_non_utf8_bytes_are_decoded_with_replacement() -> None:
    out = Scrubber().scrub(b"\xff\xfe mail a@x.com \xc3").value
    assert out == "\ufffd\ufffd mail [EMAIL_1] \ufffd"


def test_scrub_many_keeps_order_and_trace_ids() -> None:
    s = Scrubber()
    results = s.scrub_many(["a@x.com", "b@x.com", "b@x.com"], trace_ids=["t", "t", "u"])
    assert [r.value for r in results] == ["[EMAIL_1]", "[EMAIL_2]", "[EMAIL_1]"]
    with pytest.raises(ValueError, match="trace ids"):
        s.scrub_many(["a"], trace_ids=["t", "u"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern_entities": frozenset({"NOPE"})}, "unknown entity types"),
        ({"operators": {"EMAIL_ADDRESS": "pseudonym"}}, "pseudonym_secret"),
        ({"mask_char": "**"}, "single character"),
        ({"max_depth": 0}, "positive"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScrubConfig(**kwargs)


def test_unknown_operator_is_rejected() -> None:
    with pytest.raises(ValueError):
        ScrubConfig(default_operator="shred")


def test_importing_the_engine_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, veil.pii, veil.pii.otel; "
        "print(sorted(m for m in ('spacy', 'presidio_analyzer', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_values_without_findings_are_returned_as_the_same_object() -> None:
    s = Scrubber()
    for value in ("plain prose", '{"role": "user", "content": "hi"}', {"a": ["b", 1]}, ["x", ("y",)]):
        result = s.scrub(value)
        assert result.value is value and result.findings == ()
    assert s.scrub(b"bytes").value == "bytes"  # changed by the walk (decoded) even without findings


def test_json_string_is_replaced_in_place_only_inside_string_values() -> None:
    s = Scrubber()
    compact = '[{"role":"user","content":"mail jane@example.com"}]'
    assert s.scrub(compact).value == '[{"role":"user","content":"mail [EMAIL_1]"}]'  # layout kept
    # The value also occurs in a key, where no recognizer accepts it: replacing it in the text would
    # change the key, so the string is parsed and walked (keys are kept).
    keyed = json.dumps({"ID555-123-4567": "call 555-123-4567"})
    assert json.loads(s.scrub(keyed).value) == {"ID555-123-4567": "call [PHONE_1]"}
    # An entity in a key is left to the walk as well; a number is scanned as text and kept a string.
    assert json.loads(s.scrub('{"jane@example.com": 4111111111111111}').value) == {
        "jane@example.com": "[CREDIT_CARD_1]"
    }
