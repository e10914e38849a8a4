"""Checksums and range rules that turn a pattern match into a finding.

Every function takes the matched text (or its digits) and returns ``True`` only when the value is a
plausible instance of its entity type; a pattern match that fails its validator is not reported. All are
pure Python and cheap: they run only on candidates that already passed a regex.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

__all__ = [
    "IBAN_LENGTHS",
    "base58check_ok",
    "bech32_ok",
    "eip55_ok",
    "iban_ok",
    "keccak256",
    "luhn_ok",
    "shannon_entropy",
    "ssn_ok",
]


def luhn_ok(digits: str) -> bool:
    """Return whether a string of ASCII digits passes the Luhn (mod 10) check used by payment cards."""
    # Every second digit from the right is doubled (its digits summed: 7 -> 14 -> 5): a translation.
    # Summing the ASCII codes in C and taking 48 off per digit avoids a Python int() per digit.
    doubled = digits[-2::-2].translate(_LUHN_DOUBLED)
    total = sum(digits[-1::-2].encode()) + sum(doubled.encode()) - 48 * len(digits)
    return total % 10 == 0


_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


# ISO 13616 lengths per country; an IBAN whose length disagrees with its country is rejected.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(compact: str) -> bool:
    """Return whether a compact upper-case IBAN has its country's length and passes ISO 7064 mod 97."""
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) != expected or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    # int(c, 36) maps 0-9 to themselves and A-Z to 10-35, exactly the IBAN letter encoding.
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """Return whether the three parts of a US SSN lie outside the ranges the SSA never issues.

    Rejected: area 000, 666 and 900-999; group 00; serial 0000.
    """
    return not (area == "000" or area == "666" or area[0] == "9" or group == "00" or serial == "0000")


_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def base58check_ok(address: str) -> bool:
    """Return whether a Base58Check string (legacy Bitcoin P2PKH/P2SH address) has a valid checksum."""
    num = 0
    for ch in address:
        idx = _B58_INDEX.get(ch)
        if idx is None:
            return False
        num = num * 58 + idx
    leading_zeros = len(address) - len(address.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big")
    raw = b"\x00" * leading_zeros + body
    if len(raw) != 25:
        return False
    payload, checksum = raw[:-4], raw[-4:]
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == checksum


_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3


def _bech32_polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _BECH32_GEN[i]
    return chk


def bech32_ok(address: str) -> bool:
    """Return whether a SegWit address (BIP-173 bech32 or BIP-350 bech32m) has a valid checksum."""
    if address.lower() != address and address.upper() != address:
        return False
    address = address.lower()
    pos = address.rfind("1")
    if pos < 1 or pos + 7 > len(address) or len(address) > 90:
        return False
    hrp, data = address[:pos], address[pos + 1 :]
    try:
        values = [_BECH32_CHARSET.index(c) for c in data]
    except ValueError:
        return False
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    return _bech32_polymod(expanded + values) in (_BECH32_CONST, _BECH32M_CONST)


# Keccak-256 (the pre-standard padding Ethereum uses; hashlib's sha3_256 pads differently).
_KECCAK_RC = (
    0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000,
    0x000000000000808B, 0x0000000080000001, 0x8000000080008081, 0x8000000000008009,
    0x000000000000008A, 0x0000000000000088, 0x0000000080008009, 0x000000008000000A,
    0x000000008000808B, 0x800000000000008B, 0x8000000000008089, 0x8000000000008003,
    0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
    0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008,
)  # fmt: skip
_KECCAK_ROT = (
    (0, 36, 3, 41, 18), (1, 44, 10, 45, 2), (62, 6, 43, 15, 61), (28, 55, 25, 21, 56), (27, 20, 39, 8, 14),
)  # fmt: skip
_MASK64 = (1 << 64) - 1


def _rol64(v: int, n: int) -> int:
    return ((v << n) | (v >> (64 - n))) & _MASK64 if n else v


def _keccak_f(a: list[list[int]]) -> list[list[int]]:
    for rc in _KECCAK_RC:
        c = [a[x][0] ^ a[x][1] ^ a[x][2] ^ a[x][3] ^ a[x][4] for x in range(5)]
        d = [c[(x - 1) % 5] ^ _rol64(c[(x + 1) % 5], 1) for x in range(5)]
        a = [[a[x][y] ^ d[x] for y in range(5)] for x in range(5)]
        b = [[0] * 5 for _ in range(5)]
        for x in range(5):
            for y in range(5):
                b[y][(2 * x + 3 * y) % 5] = _rol64(a[x][y], _KECCAK_ROT[x][y])
        a = [[b[x][y] ^ (~b[(x + 1) % 5][y] & b[(x + 2) % 5][y]) for y in range(5)] for x in range(5)]
        a[0][0] ^= rc
    return a


def keccak256(data: bytes) -> bytes:
    """Return the Keccak-256 digest of ``data`` (as used by Ethereum, not NIST SHA3-256)."""
    rate = 136
    padded = bytearray(data)
    padded.append(0x01)
    padded.extend(b"\x00" * (-len(padded) % rate))
    padded[-1] |= 0x80
    state = [[0] * 5 for _ in range(5)]
    for off in range(0, len(padded), rate):
        for i in range(rate // 8):
            state[i % 5][i // 5] ^= int.from_bytes(padded[off + 8 * i : off + 8 * i + 8], "little")
        state = _keccak_f(state)
    return b"".join(state[i % 5][i // 5].to_bytes(8, "little") for i in range(4))


def eip55_ok(hex40: str) -> bool:
    """Return whether 40 hex digits of an Ethereum address are acceptable under EIP-55.

    All-lower and all-upper case addresses carry no checksum and are accepted; mixed case must match
    the Keccak-256 checksum exactly.
    """
    if hex40 == hex40.lower() or hex40 == hex40.upper():
        return True
    digest = keccak256(hex40.lower().encode("ascii")).hex()
    # A letter must be upper case exactly where the matching digest nibble is 8 or more.
    return all(
        not ch.isalpha() or ch.isupper() == (int(h, 16) >= 8)
        for ch, h in zip(hex40, digest[:40], strict=True)
    )


def shannon_entropy(value: str) -> float:
    """Return the Shannon entropy of ``value`` in bits per character (0.0 for the empty string)."""
    n = len(value)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())
