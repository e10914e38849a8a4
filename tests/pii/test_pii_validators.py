"""Checksums and range rules, with published test vectors."""

from __future__ import annotations

import pytest

from veil.pii._validators import (
    base58check_ok,
    bech32_ok,
    eip55_ok,
    iban_ok,
    keccak256,
    luhn_ok,
    shannon_entropy,
    ssn_ok,
)


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")


@pytest.mark.parametrize("iban", ["GB82WEST12345698765432", "DE89370400440532013000", "NO9386011117947"])
def test_iban_valid(iban: str) -> None:
    assert iban_ok(iban)


@pytest.mark.parametrize(
    "iban",
    [
        "GB82WEST12345698765433",  # checksum off by one
        "GB82WEST1234569876543",  # wrong length for GB
        "ZZ82WEST12345698765432",  # unknown country
    ],
)
def test_iban_rejected(iban: str) -> None:
    assert not iban_ok(iban)


@pytest.mark.parametrize(
    ("area", "group", "serial", "ok"),
    [
        ("123", "45", "6789", True),
        ("000", "45", "6789", False),
        ("666", "45", "6789", False),
        ("900", "45", "6789", False),
        ("999", "45", "6789", False),
        ("123", "00", "6789", False),
        ("123", "45", "0000", False),
    ],
)
def test_ssn_ranges(area: str, group: str, serial: str, ok: bool) -> None:
    assert ssn_ok(area, group, serial) is ok


def test_base58check() -> None:
    assert base58check_ok("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa")
    assert base58check_ok("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy")
    assert not base58check_ok("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb")
    assert not base58check_ok("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfN0")  # '0' is not base58


def test_bech32_and_bech32m() -> None:
    assert bech32_ok("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")
    assert bech32_ok("bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297")
    assert not bech32_ok("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdr")
    assert not bech32_ok("bc1QAR0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")  # mixed case


def test_keccak256_vector() -> None:
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


def test_eip55() -> None:
    assert eip55_ok("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    assert eip55_ok("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")  # no checksum to check
    assert not eip55_ok("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")


def test_entropy() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)
