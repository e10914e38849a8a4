"""Bounded cost on hostile input: adversarial 1 MB strings aimed at each recognizer.

Stated bound: each 1 MB input is scrubbed in well under 10 seconds (``pytest.mark.timeout``) on one
shared core; linear-time scanning takes a fraction of a second, while catastrophic backtracking in any
of these expressions would take minutes to hours. This is a bound, not a speed measurement (that is
``bench/pii_speed.py``).
"""

from __future__ import annotations

import pytest

from veil.pii import Scrubber

MB = 1_000_000


def _fill(unit: str) -> str:
    return (unit * (MB // len(unit) + 1))[:MB]


ADVERSARIAL = {
    "at signs": _fill("@"),
    "local parts": _fill("a@"),
    "long local part": "a" * (MB - 20) + "@example.com",
    "domain labels": "x@" + _fill("a."),
    "hyphen labels": "x@" + _fill("a-"),
    "digits": _fill("7"),
    "digit dashes": _fill("1-"),
    "digit spaces": _fill("1 "),
    "phone openers": _fill("+("),
    "dotted digits": _fill("1."),
    "colons": _fill(":"),
    "hex colons": _fill("ab:"),
    "double colons": _fill("a::"),
    "mac-like": _fill("0a-"),
    "pem begins": _fill("-----BEGIN PRIVATE KEY-----\n"),
    "pem without end": "-----BEGIN RSA PRIVATE KEY-----\n" + _fill("QUJD"),
    "jwt heads": _fill("eyJ"),
    "jwt parts": _fill("eyJabcdefghij."),
    "openai prefix": "sk-" + _fill("a"),
    "prefix storm": _fill("sk-ghp_xoxb-AKIAAIza"),
    "password assignments": _fill("password="),
    "key assignments": _fill("key: "),
    "schemes": _fill("http://"),
    "long url": "https://" + _fill("a"),
    "url queries": "https://x.io/?" + _fill("token=a&"),
    "iban seeds": _fill("GB82 "),
    "btc-like": _fill("1A1zP1eP5QGefi2DMPTfTL5SLmv7Divf"),
    "eth prefix": _fill("0x"),
    "bech32 prefix": _fill("bc1q"),
    "non-ascii": _fill("é€𝄞"),
    "lone surrogates": _fill("\ud800a@"),
}


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    # A limit above 1 MB so that the whole adversarial string is scanned, not truncated.
    from veil.pii import ScrubConfig

    return Scrubber(ScrubConfig(max_text_chars=2 * MB, parse_json_strings=False))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_megabyte_is_scanned_in_bounded_time(scrubber: Scrubber, name: str) -> None:
    text = ADVERSARIAL[name]
    result = scrubber.scrub(text)
    assert isinstance(result.value, str)


@pytest.mark.timeout(10)
def test_adversarial_json_string_is_bounded() -> None:
    text = "[" + ",".join(['"a@x.com"'] * 100_000) + "]"
    result = Scrubber().scrub(text)
    assert result.findings[0].count == 100_000
