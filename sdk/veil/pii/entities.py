"""Entity type names (Presidio's where Presidio has one) and their short placeholder labels."""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "DEFAULT_NER_ENTITIES",
    "NER_ENTITIES",
    "PATTERN_ENTITIES",
    "EntitySpan",
    "placeholder_label",
]

EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD = "CREDIT_CARD"
IBAN_CODE = "IBAN_CODE"
IP_ADDRESS = "IP_ADDRESS"
US_SSN = "US_SSN"
CRYPTO = "CRYPTO"
MAC_ADDRESS = "MAC_ADDRESS"
URL = "URL"  # only URLs that carry credentials or secret query parameters
API_KEY = "API_KEY"  # provider keys recognisable by their prefix (OpenAI, Anthropic, AWS, GitHub, ...)
JWT = "JWT"
PRIVATE_KEY = "PRIVATE_KEY"
SECRET = "SECRET"  # a random-looking value assigned to a key/secret/token/password-like name
PERSON = "PERSON"
LOCATION = "LOCATION"
NRP = "NRP"  # nationality, religious or political group
ORGANIZATION = "ORGANIZATION"

PATTERN_ENTITIES: frozenset[str] = frozenset(
    {
        EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, IP_ADDRESS, US_SSN, CRYPTO, MAC_ADDRESS, URL,
        API_KEY, JWT, PRIVATE_KEY, SECRET,
    }
)  # fmt: skip
NER_ENTITIES: frozenset[str] = frozenset({PERSON, LOCATION, NRP, ORGANIZATION})
# ORGANIZATION is off by default: spaCy's ORG label has many false positives (Presidio ignores it too).
DEFAULT_NER_ENTITIES: frozenset[str] = frozenset({PERSON, LOCATION, NRP})

_LABELS = {
    EMAIL_ADDRESS: "EMAIL",
    PHONE_NUMBER: "PHONE",
    CREDIT_CARD: "CREDIT_CARD",
    IBAN_CODE: "IBAN",
    IP_ADDRESS: "IP",
    US_SSN: "SSN",
    MAC_ADDRESS: "MAC",
    ORGANIZATION: "ORG",
}


def placeholder_label(entity_type: str) -> str:
    """Return the short label used in placeholders and pseudonyms (``EMAIL_ADDRESS`` -> ``EMAIL``)."""
    return _LABELS.get(entity_type, entity_type)


class EntitySpan(NamedTuple):
    """One detected entity: ``text[start:end]`` is of ``entity_type``, found by ``detector``."""

    start: int
    end: int
    entity_type: str
    detector: str  # "pattern" | "ner"
