"""The seed index (``veil.pii._seeds``): Hyperscan and the ``re`` fallback find the same things.

The pattern recognizers visit the positions of their literal seeds instead of scanning for them; with
Hyperscan installed the positions come from one pass over the text, without it from ``re``. Both
backends must give identical ``find_patterns`` and ``find_patterns_many`` results (and identical seed
positions) on every text of the other tests/pii files, on hypothesis texts built around the seeds, and
must stay linear on adversarial runs of seeds.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pii_hostile_input import ADVERSARIAL
from test_pii_property import ENTITY_VALUES
from test_pii_recognizers import NEGATIVES, POSITIVES

from veil.pii import _seeds
from veil.pii.entities import PATTERN_ENTITIES
from veil.pii.recognizers import find_patterns, find_patterns_many

needs_hyperscan = pytest.mark.skipif(not _seeds.hyperscan_available(), reason="hyperscan is not installed")
pytestmark = needs_hyperscan

T = TypeVar("T")
MB = 1_000_000


@contextmanager
def _backend(hyperscan: bool) -> Iterator[None]:
    before = _seeds.backend() == "hyperscan"
    _seeds.use_hyperscan(hyperscan)
    try:
        yield
    finally:
        _seeds.use_hyperscan(before)


def _both(compute: Callable[[], T]) -> tuple[T, T]:
    """``compute()`` with Hyperscan, then with ``re``."""
    with _backend(True):
        fast = compute()
    with _backend(False):
        pure = compute()
    return fast, pure


def _seed_starts(text: str) -> list[list[int]]:
    data = text.encode("latin-1", "replace")
    index = _seeds.SeedIndex(data)
    return [index.starts(seed) for seed in _seeds.SEEDS]


def _assert_same(texts: list[str]) -> None:
    for text in texts:
        fast, pure = _both(lambda text=text: find_patterns(text, PATTERN_ENTITIES))
        assert fast == pure, text[:200]
        fast_seeds, pure_seeds = _both(lambda text=text: _seed_starts(text))
        assert fast_seeds == pure_seeds, text[:200]
    fast_many, pure_many = _both(lambda: find_patterns_many(texts, PATTERN_ENTITIES))
    assert fast_many == pure_many


def _string_constants(path: Path) -> list[str]:
    """Every string literal of a test module: the texts its tests scan, among others."""
    tree = ast.parse(path.read_text())
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


TEST_TEXTS = sorted(
    {text for path in sorted(Path(__file__).parent.glob("test_pii_*.py")) for text in _string_constants(path)}
    | {text for _, text, _ in POSITIVES}
    | {text for _, text in NEGATIVES}
    | set(ENTITY_VALUES)
)


def test_same_results_on_the_texts_of_the_other_pii_tests() -> None:
    assert len(TEST_TEXTS) > 200
    _assert_same(TEST_TEXTS)
    _assert_same([" and ".join(f"value {v} here" for v in ENTITY_VALUES)])


def test_same_results_on_the_adversarial_inputs() -> None:
    # 64 KB of each is enough for identity; the megabytes are for the time bound (below and hostile test).
    _assert_same([text[: 64 * 1024] for text in ADVERSARIAL.values()])


# Every seed literal, near misses (one character short, changed or cased differently), the characters
# that decide a match around them, and values the recognizers accept after them.
_LITERALS = sorted({literal.decode() for seed in _seeds.SEEDS for literal in seed.literals})
assert _LITERALS
_NEAR_MISSES = sorted(
    {literal[:-1] for literal in _LITERALS}
    | {literal[1:] for literal in _LITERALS}
    | {literal.upper() for literal in _LITERALS}
    | {literal.capitalize() for literal in _LITERALS}
    | {"gh", "ghx_", "xox-", "xoxz-", "AKI", "ASIB", "AIzb", "k_live", "rk_", "sk_", "ey", "eyj", ":/", "bc",}
)  # fmt: skip
_KEYWORDS = [
    "password", "PASSWORD", "Passwd", "passphrase", "pwd", "PWD", "secret", "Secret", "client_secret",
    "token", "TOKEN", "x-token", "api_key", "apikey", "APIKEY", "key", "Key", "monkey", "credential",
    "Credentials", "api",
]  # fmt: skip
_GLUE = [
    "=", ": ", " is ", "=>", ":=", '"', "'", " ", "\x00\n", "\n", ".", "-", "_", "/", "?", "&", "#", "@",
    "a", "Z", "9", "r", "s", "x", "é", "€", "𝄞", "\ud800",
]  # fmt: skip
_VALUES = [
    "Zx8fK2pQ9rT4vW7yB3nM6", "hunter2!x", "aaaaaaaaaaaaaaaa", "0123456789abcdef0123456789ABCDEF01234567",
    "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    "IOSFODNN7EXAMPLE", "SyD-1a2b3c4d5e6f7g8h9i0jKLMNOPQRSTUV", "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX", "hbGciOiJIUzI1NiJ9", "x.io/?token=abc&", "u:p@host",
    "1234-5678", "00:1A:2B:3C:4D:5E", "12345678901234567890",
]  # fmt: skip
# One match of every prefixed expression (a seed the index missed would lose it with Hyperscan only).
_KEYS = [
    "sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3", "sk-ant-api03-Ab3dE5gH7jK9mN1pQ3sT5vX7",
    "sk-Ab3dE5gH7jK9mN1pQ3sT",
    "AKIAIOSFODNN7EXAMPLE", "ASIAIOSFODNN7EXAMPLE", "AIzaSyD-1a2b3c4d5e6f7g8h9i0jKLMNOPQRSTUV",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "gho_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "ghu_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "ghs_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "ghr_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "github_pat_11ABCDEFG0123456789_abcdefghijkl",
    "ghithub_pat_11ABCDEFG0123456789_abcdefghijkl",  # no token
    "xoxa-1234-abcdefghij", "xoxb-abcdefghijKLM", "xoxp-9-abcdefghij", "xoxo-abcdefghij", "xoxs-abcdefghij",
    "xoxr-abcdefghij", "xoxe-abcdefghij", "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "https://hooks.slack.com/workflows/T000/B000/XXXXXXXXXXXX", "sk_live_0123456789abcdefABCD",
    "rk_test_0123456789abcdefABCD", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xde0b295669a9fd93d5f28d9ec85e40f4cb697bae",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "postgres://admin:s3cret@db.internal:5432/app", "https://x.io/a?api_key=abc",
]  # fmt: skip
# MAC and IPv6 addresses and what their seeds (fixed-width runs of hex digits and separators) near-miss.
_ADDRESSES = [
    "00:1A:2B:3C:4D:5E", "00-1A-2B-3C-4D-5E", "0a-1b-2c-3d-4e-5f", "0a:1b:2c:3d:4e", "fe80::1", "::1", "::",
    "2001:db8:85a3::8a2e:370:7334", "1111:2222:3333:4444:5555:6666:7777:8888", "1:2:3:4:5:6:7:8", ":",
    "fe80:0000:0000:0000:0204:61ff:fe9d:f156", "::ffff:192.168.1.1", "11:34:35", "a::b", "abcd:ef01:",
    "12345:", "1:2:3:4:5:6:1.2.3.4",
]  # fmt: skip
fragments = st.one_of(
    st.sampled_from(_KEYS),
    st.sampled_from(_ADDRESSES),
    st.text(alphabet="0123456789abcdefABCDEFgG:-.", max_size=14),
    st.sampled_from(_LITERALS),
    st.sampled_from(_NEAR_MISSES),
    st.sampled_from(_KEYWORDS),
    st.sampled_from(_GLUE),
    st.sampled_from(_VALUES),
    st.sampled_from(ENTITY_VALUES),
    st.text(alphabet="abcXYZ0123456789_-:/.=", max_size=10),
    st.text(max_size=4),
)
seed_texts = st.lists(fragments, max_size=40).map("".join)


@settings(max_examples=1500, deadline=None)
@given(text=seed_texts)
def test_same_results_on_texts_built_around_the_seeds(text: str) -> None:
    fast, pure = _both(lambda: find_patterns(text, PATTERN_ENTITIES))
    assert fast == pure
    fast_seeds, pure_seeds = _both(lambda: _seed_starts(text))
    assert fast_seeds == pure_seeds


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(seed_texts, max_size=12))
def test_same_results_in_batches(texts: list[str]) -> None:
    fast, pure = _both(lambda: find_patterns_many(texts, PATTERN_ENTITIES))
    assert fast == pure


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet="0123456789abcdefABCDEF:-. x", max_size=200))
def test_same_results_on_runs_of_hex_digits_and_separators(text: str) -> None:
    # Long runs: the address recognizers read up to 45 characters either side of a seed.
    fast, pure = _both(lambda: find_patterns(text, PATTERN_ENTITIES))
    assert fast == pure


def _fill(unit: str) -> str:
    return (unit * (MB // len(unit) + 1))[:MB]


# Runs of seeds, each a megabyte: every seed position is visited once, whichever the backend.
SEED_STORMS = {
    "keywords": _fill("keykey"),
    "keywords in capitals": _fill("PASSWORD"),
    "keyword assignments": _fill("token=Zx8fK2pQ9rT4vW7y "),
    "values full of keywords": "secret=" + _fill("keytoken"),
    "jwt heads": _fill("eyJ"),
    "openai prefixes": _fill("sk-"),
    "overlapping aws prefixes": _fill("AKIAKIASIA"),
    "slack prefixes": _fill("xoxb-"),
    "github prefixes": _fill("ghp_"),
    "stripe prefixes": _fill("sk_live_"),
    "scheme separators": _fill("://"),  # 8 s before the URL recognizer checked the scheme first
    "separators after digits": _fill("1://"),
    "wallet prefixes": _fill("bc10x"),
    "mac tails": _fill(":0a"),
    "dashed mac tails": _fill("-0a"),
    "ipv6 seeds": _fill("1:2:"),
    "double colons": _fill("::"),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", sorted(SEED_STORMS))
def test_seed_storms_are_scanned_in_bounded_time(name: str) -> None:
    text = SEED_STORMS[name]
    fast, pure = _both(lambda: find_patterns(text, PATTERN_ENTITIES))
    assert fast == pure


def test_hyperscan_is_the_backend_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("VEIL_PII_HYPERSCAN", "1").strip() == "0":
        pytest.skip("VEIL_PII_HYPERSCAN=0 forces the re backend")
    assert _seeds.backend() == "hyperscan"
    scans: list[bytes] = []
    scan = _seeds.SeedIndex._scan

    def counting_scan(self: _seeds.SeedIndex) -> list[list[int] | None]:
        scans.append(self._data)
        return scan(self)

    monkeypatch.setattr(_seeds.SeedIndex, "_scan", counting_scan)
    text = "token=Zx8fK2pQ9rT4vW7yB3nM6 at https://u:p@x.io eyJ"
    assert find_patterns(text, PATTERN_ENTITIES)
    assert scans == [text.encode()]  # one pass for every literal-driven recognizer


def test_the_environment_variable_forces_the_re_backend() -> None:
    code = "from veil.pii import _seeds; print(_seeds.backend(), _seeds.hyperscan_available())"
    env = {**os.environ, "VEIL_PII_HYPERSCAN": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["re", "True"]


def test_threads_scan_at_once_with_scratch_of_their_own() -> None:
    # The binding releases the GIL while it scans, and a scratch space serves one scan at a time.
    text = " ".join(ENTITY_VALUES) * 50
    expected = find_patterns(text, PATTERN_ENTITIES)
    results: list[bool] = []

    def work() -> None:
        results.extend(find_patterns(text, PATTERN_ENTITIES) == expected for _ in range(3))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 12


def test_caseless_seeds_are_given_in_lower_case() -> None:
    assert all(
        literal == literal.lower() for seed in _seeds.SEEDS if seed.caseless for literal in seed.literals
    )
    with pytest.raises(ValueError, match="lower case"):
        _seeds.Seed(b"Key", caseless=True)
