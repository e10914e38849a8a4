"""Every pattern recognizer: positives (exact span and type), negatives (validator rejections, lookalikes)."""

from __future__ import annotations

import pytest

from veil.pii.entities import PATTERN_ENTITIES
from veil.pii.recognizers import find_patterns


def found(text: str) -> list[tuple[str, str]]:
    return [(s.entity_type, text[s.start : s.end]) for s in find_patterns(text, PATTERN_ENTITIES)]


POSITIVES = [
    ("EMAIL_ADDRESS", "write to jane.doe+tag@mail.example.co.uk today", "jane.doe+tag@mail.example.co.uk"),
    ("EMAIL_ADDRESS", "UtaKortig@jourrapide.com", "UtaKortig@jourrapide.com"),
    ("PHONE_NUMBER", "call +1-555-123-4567 now", "+1-555-123-4567"),
    ("PHONE_NUMBER", "call (555) 123-4567.", "(555) 123-4567"),
    ("PHONE_NUMBER", "ring +44 20 7946 0958", "+44 20 7946 0958"),
    ("PHONE_NUMBER", "ring +41 (0)96 471 07 95", "+41 (0)96 471 07 95"),
    ("PHONE_NUMBER", "ring 07700 063 966 please", "07700 063 966"),
    ("PHONE_NUMBER", "fax 03.93.92.16.85", "03.93.92.16.85"),
    ("PHONE_NUMBER", "office 345-899-3560x4587", "345-899-3560x4587"),
    ("PHONE_NUMBER", "home 9498777106", "9498777106"),
    ("PHONE_NUMBER", "Phone:\n467 3395", "467 3395"),
    ("PHONE_NUMBER", "desk +46 (0)8 928 571 38", "+46 (0)8 928 571 38"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "card 4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("CREDIT_CARD", "amex 378282246310005", "378282246310005"),
    ("CREDIT_CARD", "maestro 630427373398", "630427373398"),
    ("CREDIT_CARD", "maestro 060426070011", "060426070011"),
    ("IBAN_CODE", "IBAN GB82 WEST 1234 5698 7654 32 is mine", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN_CODE", "pay DE89370400440532013000.", "DE89370400440532013000"),
    ("IBAN_CODE", "lower gb82west12345698765432 ok", "gb82west12345698765432"),
    ("IP_ADDRESS", "from 192.168.10.254, then", "192.168.10.254"),
    ("IP_ADDRESS", "v6 2001:db8:85a3::8a2e:370:7334 up", "2001:db8:85a3::8a2e:370:7334"),
    ("IP_ADDRESS", "link fe80::1ff:fe23:4567:890a.", "fe80::1ff:fe23:4567:890a"),
    ("US_SSN", "ssn 123-45-6789.", "123-45-6789"),
    ("US_SSN", "ssn 853 37 1694", "853 37 1694"),
    ("CRYPTO", "btc 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"),
    (
        "CRYPTO",
        "btc bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    ),
    (
        "CRYPTO",
        "eth 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    ),
    ("MAC_ADDRESS", "nic 00:1A:2B:3C:4D:5E up", "00:1A:2B:3C:4D:5E"),
    ("MAC_ADDRESS", "nic 00-1a-2b-3c-4d-5e", "00-1a-2b-3c-4d-5e"),
    (
        "URL",
        "db postgres://admin:s3cret@db.internal:5432/app.",
        "postgres://admin:s3cret@db.internal:5432/app",
    ),
    ("URL", "see https://x.io/cb?code=1&access_token=abc123", "https://x.io/cb?code=1&access_token=abc123"),
    ("API_KEY", "k=sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3", "sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3"),
    (
        "API_KEY",
        "sk-ant-api03-Zk3Xq9Lm2Np7Rt5Vw8Yb1Cd4Fg6Hj0Kl-QsTuVwXyZ_abc",
        "sk-ant-api03-Zk3Xq9Lm2Np7Rt5Vw8Yb1Cd4Fg6Hj0Kl-QsTuVwXyZ_abc",
    ),
    ("API_KEY", "aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("API_KEY", "gh ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
    (
        "API_KEY",
        "fine-grained github_pat_11ABCDEFG0123456789_abcdefghijkl",
        "github_pat_11ABCDEFG0123456789_abcdefghijkl",
    ),
    ("API_KEY", "slack xoxb-1234567890-abcdefghijkl", "xoxb-1234567890-abcdefghijkl"),
    ("API_KEY", "g AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    ("API_KEY", "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    (
        "JWT",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    (
        "PRIVATE_KEY",
        "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY----- done",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    ),
    ("SECRET", 'config password="hunter2!x"', "hunter2!x"),
    ("SECRET", "client_secret: q8Zr2LmX0pT7vB4nK9sW", "q8Zr2LmX0pT7vB4nK9sW"),
    ("SECRET", "API_TOKEN=Zx8fK2pQ9rT4vW7yB3nM6", "Zx8fK2pQ9rT4vW7yB3nM6"),
    ("SECRET", "apikey: 'Zx8fK2pQ9rT4vW7yB3nM6'", "Zx8fK2pQ9rT4vW7yB3nM6"),
    ("SECRET", "Ünïcödé Passwort, Password: s3cr3t-Ünï", "s3cr3t-Ünï"),
]


@pytest.mark.parametrize(("entity_type", "text", "expected"), POSITIVES, ids=[p[0] for p in POSITIVES])
def test_positive(entity_type: str, text: str, expected: str) -> None:
    assert (entity_type, expected) in found(text)


NEGATIVES = [
    ("Luhn-invalid card", "card 4111 1111 1111 1112"),
    ("bad IBAN checksum", "IBAN GB82WEST12345698765433"),
    ("SSN area 000", "ssn 000-12-3456"),
    ("SSN area 666", "ssn 666-12-3456"),
    ("SSN area 9xx", "ssn 912-12-3456"),
    ("SSN group 00", "ssn 123-00-4567"),
    ("SSN serial 0000", "ssn 123-45-0000"),
    ("IPv4 octet > 255", "version 300.1.2.3"),
    ("bad base58 checksum", "btc 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb"),
    ("bad EIP-55 checksum", "eth 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
    ("date", "on 2000-04-16 11:34:35 and 12/05/2019"),
    ("short numbers", "in 1977 aged 42 at 6750 Main St, zip 53650"),
    ("decimal", "pi is 3141.5926 and e 27182.818"),
    ("unix timestamp", "at 1607635102 seconds"),
    ("uuid tail that passes Luhn", "id 550e8400-e29b-41d4-a716-446655440001"),
    ("two groups without phone context", "Apt 17151 2450 Springfield"),
    ("C++ scope", "use std::vector and a::b::c"),
    ("clock", "at 11:34:35 sharp"),
    ("plain URL", "docs at https://example.com/path?page=2"),
    ("user-only URL", "clone ssh://git@github.com/org/repo"),
    ("sk- prose", "the sk-learn-compatible-estimators-here package"),
    ("password word", "the password field is required"),
    ("low-entropy token", "token: aaaaaaaaaaaaaaaaaaaa"),
    ("keyword inside a word", "monkey: Zx8fK2pQ9rT4vW7yB3nM6"),
    ("email lookalike", "at @handle and foo@bar"),
    ("digits in word", "order ID12345678901 and ABC-123-456-7890X"),
]


@pytest.mark.parametrize(("why", "text"), NEGATIVES, ids=[n[0] for n in NEGATIVES])
def test_negative(why: str, text: str) -> None:
    assert found(text) == []


def test_entity_filter_limits_what_is_reported() -> None:
    text = "mail a@b.com card 4111111111111111"
    spans = find_patterns(text, frozenset({"CREDIT_CARD"}))
    assert [(s.entity_type, text[s.start : s.end]) for s in spans] == [("CREDIT_CARD", "4111111111111111")]


def test_spans_do_not_overlap_and_prefer_the_longest() -> None:
    # The URL's credentials contain something e-mail shaped; one URL span is reported, not both.
    text = "https://bob:pw@mail.example.com/inbox"
    assert found(text) == [("URL", text)]


def test_number_glued_to_a_neighbour_is_trimmed() -> None:
    assert found("call 555-123-4567 2 times") == [("PHONE_NUMBER", "555-123-4567")]
