"""Pattern recognizers: regular expressions guarded by cheap prefilters, confirmed by validators.

Speed comes from never running an expensive expression over text that cannot match:

* every expression starts with a literal or a small character class, so ``re`` skips ahead with its
  fast prefix/charset search instead of attempting a match at every position (a literal is about ten
  times faster than a class, so the frequent scans use literals: ``sk-``, ``AKIA``, ``:``, ``-``);
* the literal scans run on a Latin-1 byte copy of the text (same offsets), where ``re``'s prefix search
  is about twice as fast as on ``str`` and than ``bytes.find``; validators and context checks still read
  the ``str``;
* with Hyperscan installed, the recognizers whose matches start with a literal (API key prefixes,
  ``eyJ``, ``://``, wallet prefixes, the keyword stems) or a short run of hex digits and separators (MAC,
  IPv6) visit the positions of those seeds, found in one pass over the text (``_seeds``), instead of
  scanning once per seed; the results are the same without it;
* single-character tests (``"@" in text``, ``"_" in data``, ``":" in text``: memchr) skip whole
  recognizers;
* everything that starts with a digit (IPv4, SSN, card, phone, IBAN digits, legacy Bitcoin) is found in
  one scan that jumps, by memchr on a digits-to-"0" translation, to 32 characters before the next digit,
  and number candidates are classified in Python only when long enough to be any of them;
* e-mail addresses are anchored on ``@`` and grown outwards with bounded windows;
* :func:`find_patterns_many` scans the short texts of a batch together, so the fixed cost per scan is
  paid once per megabyte rather than once per prompt.

Every quantifier is bounded or followed by a disjoint delimiter, and the scans that search ahead resume
after what they consumed, so the cost is linear in the text length (no catastrophic backtracking);
``tests/pii/test_pii_hostile_input.py`` checks this on adversarial 1 MB inputs.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import accumulate, count, repeat
from operator import add, sub

from veil.pii import _seeds
from veil.pii._seeds import SeedIndex
from veil.pii._validators import (
    IBAN_LENGTHS,
    base58check_ok,
    bech32_ok,
    eip55_ok,
    iban_ok,
    luhn_ok,
    shannon_entropy,
    ssn_ok,
)
from veil.pii.entities import (
    API_KEY,
    CREDIT_CARD,
    CRYPTO,
    EMAIL_ADDRESS,
    IBAN_CODE,
    IP_ADDRESS,
    JWT,
    MAC_ADDRESS,
    PHONE_NUMBER,
    PRIVATE_KEY,
    SECRET,
    URL,
    US_SSN,
    EntitySpan,
)

__all__ = ["find_patterns", "find_patterns_many", "resolve_overlaps"]

PATTERN = "pattern"


def _word_char_before(text: str, pos: int) -> bool:
    return pos > 0 and (text[pos - 1].isalnum() or text[pos - 1] == "_")


def _word_char_at(text: str, pos: int) -> bool:
    return pos < len(text) and (text[pos].isalnum() or text[pos] == "_")


# --- e-mail --------------------------------------------------------------------------------------------

_AT = re.compile(r"@(?=[A-Za-z0-9])")
_EMAIL_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])")
_EMAIL_LOCAL_REVERSED = re.compile(r"[\w.%+\-]{1,64}")


def _emails(text: str, data: bytes, seeds: SeedIndex, out: list[EntitySpan]) -> None:
    if "@" not in text:
        return
    for at_match in _AT.finditer(text):
        at = at_match.start()
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if domain is None:
            continue
        # Grow the local part leftwards: match the reversed 64-character window before '@'.
        local = _EMAIL_LOCAL_REVERSED.match(text[max(0, at - 64) : at][::-1])
        if local is None:
            continue
        start = at - local.end()
        while text[start] == ".":
            start += 1
        # "scheme://user@host" is a URL's user name, not a mailbox (credentials are the URL recognizer's).
        if start < at and text[at - 1] != "." and text[max(0, start - 3) : start] != "://":
            out.append(EntitySpan(start, domain.end(), EMAIL_ADDRESS, PATTERN))


# --- URLs with credentials or secret query parameters ----------------------------------------------------

_SCHEME_REVERSED = re.compile(r"[A-Za-z0-9+.\-]{1,16}")
_URL_REST = re.compile(r"[^\s\"'<>\\`{}|^\x00]{1,4096}")
_URL_SECRET_PARAM = re.compile(
    r"[?&#;](?:access_token|id_token|refresh_token|token|api[_-]?key|key|secret|client_secret|password|"
    r"passwd|pwd|sig|signature|auth|session(?:_?id)?|x-amz-signature|x-amz-credential|x-goog-signature)"
    r"=[^&#\s]",
    re.IGNORECASE,
)


def _urls(text: str, data: bytes, seeds: SeedIndex, out: list[EntitySpan]) -> None:
    pos = 0
    for at in seeds.starts(_seeds.SCHEME_SEP):  # every "://"
        if at < pos:
            continue  # inside the URL before
        pos = after = at + 3
        scheme = _SCHEME_REVERSED.match(text[max(0, at - 16) : at][::-1])
        if scheme is None:
            continue
        start = at - scheme.end()
        while start < at and not text[start].isalpha():
            start += 1
        if start == at:
            continue
        # Only now: the rest runs up to 4096 characters, and a run of "://" without schemes would read
        # that much per separator.
        rest = _URL_REST.match(text, after)
        if rest is None:
            continue
        end = rest.end()
        while end > after and text[end - 1] in ".,;:!?)]":
            end -= 1
        url_rest = text[after:end]
        authority = re.split(r"[/?#]", url_rest, maxsplit=1)[0]
        userinfo = authority.rpartition("@")[0]
        if ":" in userinfo or _URL_SECRET_PARAM.search(url_rest):
            out.append(EntitySpan(start, end, URL, PATTERN))
        pos = max(pos, end)


# --- provider keys, JWTs, private keys ----------------------------------------------------------------


def _looks_random(value: str, min_entropy: float = 3.0) -> bool:
    """A token that mixes letters and digits with enough entropy to be a generated secret."""
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return has_digit and has_alpha and shannon_entropy(value) >= min_entropy


def _openai_or_anthropic(key: str) -> bool:
    return key.startswith("sk-ant-") or _looks_random(key[3:])


def _seeded_search(
    pattern: re.Pattern[bytes], starts: list[int], data: bytes
) -> Callable[[int], re.Match[bytes] | None]:
    """``partial(pattern.search, data)`` from the sorted starts where the pattern can match, for
    positions that never move back: the match at the first start at or after the position.

    A match can only begin at a seed, and ``match(data, p)`` sees the text before ``p`` (lookbehinds) as
    the scan did, so trying the seeds at or after the position, in order, finds what ``search`` finds.
    """
    i = 0

    def search(pos: int) -> re.Match[bytes] | None:
        nonlocal i
        i = bisect_left(starts, pos, i)
        while i < len(starts):
            m = pattern.match(data, starts[i])
            if m is not None:
                return m
            i += 1
        return None

    return search


def _seeded_finditer(pattern: re.Pattern[bytes], starts: list[int], data: bytes) -> Iterator[re.Match[bytes]]:
    """``pattern.finditer(data)`` from the sorted starts of its seed: each match is the first one found
    from the previous match's end (no expression here matches the empty string)."""
    search = _seeded_search(pattern, starts, data)
    end = 0
    while (m := search(end)) is not None:
        end = m.end()
        yield m


def _matches(
    pattern: re.Pattern[bytes], seed: _seeds.Seed, data: bytes, seeds: SeedIndex
) -> Iterator[re.Match[bytes]]:
    """``pattern.finditer(data)``: by its seed's positions when one pass found them all (Hyperscan),
    else by ``re``'s own scan (a seed list would cost a scan too, plus Python per hit)."""
    if seeds.indexed:
        starts = seeds.starts(seed)
        return _seeded_finditer(pattern, starts, data) if starts else iter(())
    return pattern.finditer(data)


# (expression over the Latin-1 byte copy, the seed its matches start with, validator of the whole match
# or None, characters one of which must precede the match and belongs to the key, or b"" for none, a byte
# the text must contain or b""). Every expression starts with a literal, so a scan costs about as much as
# a substring test, and half as much on bytes as on str; the classes are ASCII, so bytes and str give the
# same matches.
_PREFIXED: tuple[tuple[re.Pattern[bytes], _seeds.Seed, Callable[[str], bool] | None, bytes, bytes], ...] = (
    (
        re.compile(
            rb"sk-(?:ant-(?:api|admin|oat|sid)[0-9]{2}-[A-Za-z0-9_\-]{20,512}"
            rb"|(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,512})"
        ),
        _seeds.OPENAI,
        _openai_or_anthropic,
        b"",
        b"",
    ),
    # AWS access key ids and Google API keys: one scan for both.
    (
        re.compile(rb"A(?:(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])|Iza[0-9A-Za-z_\-]{35})"),
        _seeds.AWS_GOOGLE,
        None,
        b"",
        b"",
    ),
    (
        re.compile(rb"g(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{22,255})"),
        _seeds.GITHUB,
        None,
        b"",
        b"_",
    ),
    (  # Slack tokens
        re.compile(rb"xox[abposre]-(?:[0-9]+-)?[A-Za-z0-9\-]{10,255}"),
        _seeds.SLACK,
        None,
        b"",
        b"",
    ),
    (
        re.compile(rb"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_\-]{20,255}"),
        _seeds.SLACK_HOOK,
        None,
        b"",
        b"",
    ),
    (  # Stripe sk_/rk_ keys
        re.compile(rb"k_(?:live|test)_[0-9A-Za-z]{16,255}"),
        _seeds.STRIPE,
        None,
        b"rs",
        b"_",
    ),
)


def _prefixed_secrets(text: str, data: bytes, seeds: SeedIndex, out: list[EntitySpan]) -> None:
    for pattern, seed, validate, lead, needs in _PREFIXED:
        if needs and not seeds.indexed and needs not in data:  # one memchr skips a scan
            continue
        for m in _matches(pattern, seed, data, seeds):
            start = m.start()
            if lead:
                if not data[start - 1 : start] or data[start - 1] not in lead:
                    continue
                start -= 1
            if _word_char_before(text, start):
                continue
            if validate is None or validate(text[m.start() : m.end()]):
                out.append(EntitySpan(start, m.end(), API_KEY, PATTERN))


_B64URL_RUN = re.compile(r"[A-Za-z0-9_\-]*")


def _jwts(text: str, data: bytes, seeds: SeedIndex, out: list[EntitySpan]) -> None:
    """``eyJ<header>.eyJ<payload>.<signature>``, found without backtracking: each base64url run is
    consumed once, and the search resumes after it when the token is incomplete."""
    pos = 0
    for start in seeds.starts(_seeds.EYJ):
        if start < pos:
            continue  # inside a run already consumed
        header_end = _B64URL_RUN.match(text, start).end()  # type: ignore[union-attr]
        pos = header_end
        if (
            _word_char_before(text, start)
            or header_end - start < 11
            or not text.startswith(".eyJ", header_end)
        ):
            continue
        payload_end = _B64URL_RUN.match(text, header_end + 1).end()  # type: ignore[union-attr]
        pos = payload_end
        if payload_end - header_end - 1 < 11 or text[payload_end : payload_end + 1] != ".":
            continue
        end = _B64URL_RUN.match(text, payload_end + 1).end()  # type: ignore[union-attr]
        pos = end
        out.append(EntitySpan(start, end, JWT, PATTERN))


_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY( BLOCK)?-----")
_PEM_END_LINE = re.compile(r"-----END [A-Z0-9 ]{0,64}-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=\s:,\-]{0,65536}")
_PEM_MAX = 65536


def _private_keys(text: str, data: bytes, seeds: SeedIndex, out: list[EntitySpan]) -> None:
    if "PRIVATE KEY" not in text:
        return
    next_end = -2  # position of the next "-----END" at or after the current block; -1 when there is none
    pos = 0
    while (m := _PEM_BEGIN.search(text, pos)) is not None:
        if next_end != -1 and next_end < m.end():
            # One forward search per block keeps this linear even with thousands of unmatched BEGINs.
            next_end = text.find("-----END", m.end())
        end_line = _PEM_END_LINE.match(text, next_end) if 0 <= next_end - m.end() <= _PEM_MAX else None
        # Without an END line, redact the base64 body that follows (a truncated key is still a key).
        end = end_line.end() if end_line else _PEM_BODY.match(text, m.end()).end()  # type: ignore[union-attr]
        out.append(EntitySpan(m.start(), end, PRIVATE_KEY, PATTERN))
        pos = end  # BEGIN lines inside the redacted block are part of it


# --- keyword-anchored secrets ----------------------------------------------------------------------------

# Stems (caseless seeds): "pass" covers password/passwd/passphrase (the rest of the name is matched by
# _ASSIGNED_VALUE).
_PASSWORD_WORDS = (_seeds.PASS, _seeds.PWD)
_SECRET_WORDS = (_seeds.SECRET, _seeds.TOKEN, _seeds.KEY, _seeds.CREDENTIAL)
_ASSIGNED_VALUE = re.compile(
    r"""[\w\-]{0,32}["']?\s{0,4}(?::=|=>|[:=]|\s(is)\s)\s{0,4}["']?([^\s"'`,;&<>(){}\[\]\x00]{4,256})"""
)


def _keyword_secrets(text: str, data: bytes, seeds: SeedIndex, out: list[EntitySpan]) -> None:
    # Keywords are ASCII and found in either case (as in the Latin-1 byte copy lowered: same offsets).
    for words, is_password in ((_PASSWORD_WORDS, True), (_SECRET_WORDS, False)):
        for word in words:
            length = len(word.literals[0])
            start = 0
            for hit in seeds.starts(word):
                if hit < start:
                    continue  # inside the keyword before or its accepted value
                start = hit + length
                # bytes.isalnum is ASCII-only, which lowering does not change.
                if data[hit - 1 : hit].isalnum() and data[hit - 3 : hit].lower() != b"api":
                    continue  # inside a word ("monkey"); "apikey", "api_key" and "x-token" are fine
                m = _ASSIGNED_VALUE.match(text, start)
                if m is None:
                    continue
                value = m.group(2).rstrip(".")
                said_is = m.group(1) is not None
                if is_password and not said_is:
                    accepted = len(value) >= 6 and len(set(value)) > 2
                else:
                    accepted = len(value) >= (8 if is_password else 12) and _looks_random(value)
                if accepted:
                    out.append(EntitySpan(m.start(2), m.start(2) + len(value), SECRET, PATTERN))
                    start = m.start(2) + len(value)  # keywords inside the value are part of it


# --- crypto wallets, MAC and IPv6 addresses, IBANs ------------------------------------------------------

_BTC_BECH32 = re.compile(rb"bc1[02-9ac-hj-np-z]{8,87}(?![0-9A-Za-z])")
_ETH = re.compile(rb"0x([0-9a-fA-F]{40})(?![0-9A-Za-z])")


def _crypto(text: str, data: bytes, seeds: SeedIndex, out: list[EntitySpan]) -> None:
    for m in _matches(_BTC_BECH32, _seeds.BECH32, data, seeds):
        if not _word_char_before(text, m.start()) and bech32_ok(text[m.start() : m.end()]):
            out.append(EntitySpan(m.start(), m.end(), CRYPTO, PATTERN))
    for m in _matches(_ETH, _seeds.ETH, data, seeds):
        if not _word_char_before(text, m.start()) and eip55_ok(text[m.start(1) : m.end(1)]):
            out.append(EntitySpan(m.start(), m.end(), CRYPTO, PATTERN))


_HEX = frozenset("0123456789abcdefABCDEF")
# One expression per separator: a literal first character lets ``re`` skip ahead much faster than a class.
_MAC_TAILS = tuple(
    (re.compile(rb"%s[0-9A-Fa-f]{2}%s[0-9A-Fa-f]{2}%s[0-9A-Fa-f]{2}%s[0-9A-Fa-f]{2}%s[0-9A-Fa-f]{2}(?![0-9A-Za-z])"
                % ((sep,) * 5)), seed)
    for sep, seed in ((b":", _seeds.MAC_COLON), (b"-", _seeds.MAC_DASH))
)  # fmt: skip
# "::" or three colons around hex groups: clock times ("11:34:35") are not seeds. Scanned on the byte copy;
# ``_seeds.V6`` is where it can match.
_V6_SEED = re.compile(rb":(?::|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:)")
_V6_CHARS_REVERSED = re.compile(r"[0-9A-Fa-f:.]{0,45}")
_V6_CHARS = re.compile(r"[0-9A-Fa-f:.]{0,45}")


def _mac_addresses(text: str, data: bytes, seeds: SeedIndex, out: list[EntitySpan]) -> None:
    for tail, seed in _MAC_TAILS:
        for m in _matches(tail, seed, data, seeds):
            start = m.start() - 2
            if (
                start < 0
                or text[start] not in _HEX
                or text[start + 1] not in _HEX
                or _word_char_before(text, start)
            ):
                continue
            out.append(EntitySpan(start, m.end(), MAC_ADDRESS, PATTERN))


def _ipv6_addresses(text: str, data: bytes, seeds: SeedIndex, out: list[EntitySpan]) -> None:
    starts = seeds.starts(_seeds.V6) if seeds.indexed else None
    if starts == []:
        return  # no seed: the count below is a pass over the text
    # Kept where there are seeds: both backends must skip the same texts.
    if ":" not in text or (text.count(":") < 7 and "::" not in text):  # one memchr for most prose
        return
    search = partial(_V6_SEED.search, data) if starts is None else _seeded_search(_V6_SEED, starts, data)
    pos = 0
    while (seed := search(pos)) is not None:
        left = _V6_CHARS_REVERSED.match(text[max(0, seed.start() - 45) : seed.start()][::-1])
        start = seed.start() - left.end()  # type: ignore[union-attr]
        end = _V6_CHARS.match(text, seed.start()).end()  # type: ignore[union-attr]
        pos = max(end, seed.end())
        candidate = text[start:end].rstrip(".:")
        groups = [g for g in re.split(r"[:.]", candidate) if g]
        if len(groups) < 2 or not any(c.isdigit() for c in candidate):
            continue
        if candidate.startswith(":") and not candidate.startswith("::"):
            candidate, start = candidate[1:], start + 1
        if _word_char_before(text, start) or _word_char_at(text, start + len(candidate)):
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        out.append(EntitySpan(start, start + len(candidate), IP_ADDRESS, PATTERN))


_IBAN = re.compile(r"[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?")


def _iban_at(text: str, start: int) -> int:
    """Return the end of a valid IBAN starting at ``start``, or -1."""
    m = _IBAN.match(text, start)
    if m is None:
        return -1
    compact = m.group().replace(" ", "").upper()
    # The expression may run into a following word ("... 32 is"): the country fixes the length.
    length = IBAN_LENGTHS.get(compact[:2], 0)
    if len(compact) < length or not iban_ok(compact[:length]):
        return -1
    end, seen = start, 0
    while seen < length:  # map the compact length back onto the text, which may contain spaces
        if text[end] != " ":
            seen += 1
        end += 1
    return -1 if _word_char_at(text, end) else end


_DIGIT_RUN = re.compile(r"[0-9]+")
_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_SSN = re.compile(r"([0-9]{3})([- ])([0-9]{2})\2([0-9]{4})")
_CARD = re.compile(r"[0-9]{4}(?:[ -]?[0-9]{2,7}){2,5}")
_DATE = re.compile(
    r"(?:19|20)[0-9]{2}[-./][0-9]{1,2}[-./][0-9]{1,2}|[0-9]{1,2}[-./][0-9]{1,2}[-./](?:19|20)[0-9]{2}"
)
_EXTENSION = re.compile(r" ?(?:x|ext\.?) ?[0-9]{1,6}$")


# Two bare digit groups ("467 3395") are as often a house number and a postcode as a phone number:
# they count as a phone number only after one of these words.
_PHONE_CONTEXT = (
    "phone", "call", "tel", "mobile", "cell", "fax", "desk", "office", "contact", "reach", "ring", "answer",
    "number", "registered", "sms", "whatsapp", "dial", "home", "work",
)  # fmt: skip
_PHONE_CONTEXT_CHARS = 48
_PHONE_CONTEXT_WORD = re.compile("|".join(_PHONE_CONTEXT))  # any of them, as a substring


_DIGIT_RUN_SPLIT = re.compile(r"([0-9]+)")


def _is_phone(candidate: str, digits: str, text: str, start: int) -> bool:
    plus = candidate[0] == "+"
    if not (8 if plus else 7) <= len(digits) <= 15:
        return False
    if candidate.isdigit():
        return len(digits) in (10, 11) and (digits[0] != "1" or len(digits) == 11)
    # Both date forms hold a "19" or "20" year: two memchr-speed tests skip the search for most numbers.
    if ("19" in candidate or "20" in candidate) and _DATE.search(candidate):
        return False
    body = _EXTENSION.sub("", candidate) if "x" in candidate else candidate
    # [prefix, group, separator, group, ..., group, suffix]
    parts = _DIGIT_RUN_SPLIT.split(body)
    groups = list(map(len, parts[1::2]))
    if len(groups) == 1:
        return plus
    separators = parts[2:-1:2]  # separators[i] lies between groups i and i + 1
    if max(map(len, separators)) > 3:
        return False
    if len(groups) == 2 and separators[0] == ".":
        return False  # a decimal number, not a phone number
    if min(groups) < 2 and not all(
        g > 1 or _short_group_ok(i, groups, separators, plus) for i, g in enumerate(groups)
    ):
        return False
    ordered = sorted(groups)
    if ordered[-1] > 7 or ordered[-2] > 5:  # no group over 7 digits, at most one over 5
        return False
    if len(groups) == 2 and not plus and "(" not in candidate:
        window = text[max(0, start - _PHONE_CONTEXT_CHARS) : start].lower()
        return _PHONE_CONTEXT_WORD.search(window) is not None
    return True


def _short_group_ok(i: int, groups: list[int], separators: list[str], plus: bool) -> bool:
    """Short groups only where phone formats put them: a country code after '+', a "(0)" trunk prefix
    and the area code right after it ("+46 (0)8 928 571 38")."""
    if (i == 0 and plus) or (i > 0 and groups[i] == 1 and separators[i - 1].endswith("(")):
        return True
    return (
        i > 0
        and separators[i - 1].startswith(")")
        and ((i == 1 and plus) or (i > 1 and groups[i - 1] == 1 and separators[i - 2].endswith("(")))
    )


# Number candidates are made of digits and these characters only (see _DIGIT_SEEDED): deleting them is
# a cheaper way to keep the digits than a regex substitution.
NUMBER_PUNCTUATION = str.maketrans("", "", "+().- xet")


def _classify_number(candidate: str, text: str, start: int) -> str | None:
    digits = candidate if candidate.isdigit() else candidate.translate(NUMBER_PUNCTUATION)
    if "." in candidate and (ip := _IPV4.fullmatch(candidate)):
        return IP_ADDRESS if all(int(octet) <= 255 for octet in ip.groups()) else None
    if len(candidate) == 11 and (ssn := _SSN.fullmatch(candidate)):
        return US_SSN if ssn_ok(ssn.group(1), ssn.group(3), ssn.group(4)) else None
    if (
        12 <= len(digits) <= 19
        and (len(digits) > 12 or digits[0] in "56" or digits.startswith("0604"))  # 12 digits: Maestro
        and (candidate is digits or _CARD.fullmatch(candidate))
        and luhn_ok(digits)
    ):
        return CREDIT_CARD
    if _is_phone(candidate, digits, text, start):
        return PHONE_NUMBER
    return None


_MAX_GROUPS = 8  # more digit groups than any phone, card or address format: a table of numbers


def _number(text: str, base: int, blob: str, out: list[EntitySpan]) -> None:
    if blob.count(" ") + blob.count("-") + blob.count(".") >= _MAX_GROUPS:
        return
    entity_type = _classify_number(blob, text, base)
    if entity_type is not None:
        out.append(EntitySpan(base, base + len(blob), entity_type, PATTERN))
        return
    if blob.isdigit() or _CARD.fullmatch(blob):
        # A card-shaped blob that fails Luhn is not trimmed: its leading groups are not a phone number.
        return
    runs = [(r.start(), r.end()) for r in _DIGIT_RUN.finditer(blob)]
    if len(runs) < 2:
        return
    # Try without the last or first group: a blob can glue a number to a neighbouring one
    # ("call 555-123-4567 2 times").
    tries = [(0, len(runs) - 1), (1, len(runs))]
    if len(runs) > 2:
        tries.append((1, len(runs) - 1))
    for first, last in tries:
        if sum(end - start for start, end in runs[first:last]) < 7:
            continue  # too few digits for any numeric entity
        lo = 0 if first == 0 else runs[first][0]
        hi = len(blob) if last == len(runs) else runs[last - 1][1]
        entity_type = _classify_number(blob[lo:hi], text, base + lo)
        if entity_type is not None:
            out.append(EntitySpan(base + lo, base + hi, entity_type, PATTERN))
            return


# One scan finds everything that starts with a digit (or '+'/'(' before one): number blobs long enough
# to be an IPv4 address, SSN, card or phone number; the digits of an IBAN after its country code; legacy
# Bitcoin addresses. The expression starts with a character class so ``re`` skips to candidates quickly.
_DIGIT_SEEDED = re.compile(
    r"[+(0-9]"
    # Numbers and wallets must not continue a word ("ID12345678"); an IBAN's seed, its first check digit,
    # follows the two letters of its country. So no match has a digit or "_" before its first character:
    # one lookbehind rejects the digits inside a run of them (most digits), where each branch's own
    # lookbehinds would be tried in turn. The lookbehinds check the character before the first one,
    # after it, so ``re`` keeps its fast first-character search.
    r"(?<![0-9_][+(0-9])(?:"
    r"(?<!\w[+(0-9])(?:(?P<num>[0-9().\- ]{5,30}[0-9](?: ?(?:x|ext\.?) ?[0-9]{1,6})?)"
    r"|(?<=[13])(?P<btc>[1-9A-HJ-NP-Za-km-z]{25,34}(?![0-9A-Za-z])))"
    r"|(?<=[A-Za-z]{2}[0-9])(?P<iban>[0-9] ?[A-Za-z0-9]{4} ?[A-Za-z0-9]{4})"
    r")"
)
# Every match holds a digit within its first 32 characters (a number's last one, or the seed itself), so
# the scan may start 32 characters before the next digit: prose between numbers is skipped by memchr.
_SEED_REACH = 32
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else b for b in range(256))
_NUMERIC = frozenset({IP_ADDRESS, US_SSN, CREDIT_CARD, PHONE_NUMBER})
_DIGIT_SEEDED_TYPES = _NUMERIC | {IBAN_CODE, CRYPTO}


def _digit_seeded(text: str, data: bytes, out: list[EntitySpan], entities: frozenset[str]) -> None:
    numeric = bool(_NUMERIC & entities)
    ibans = IBAN_CODE in entities
    crypto = CRYPTO in entities
    digits = data.translate(_DIGITS_AS_ZERO)  # "0" wherever ``text`` has an ASCII digit
    search = _DIGIT_SEEDED.search
    pos = 0
    # The same matches as ``finditer``: each search starts where the last match ended, or later when no
    # match can start before then.
    while (digit := digits.find(b"0", pos)) != -1 and (m := search(text, max(pos, digit - _SEED_REACH))):
        pos = m.end()
        kind = m.lastgroup
        if kind == "num":
            end = m.end()
            after = text[end : end + 1]
            if numeric and not (after.isalpha() or after == "_"):
                _number(text, m.start(), m.group(), out)
        elif kind == "iban":
            start = m.start() - 2  # the country code
            if ibans and text[start : start + 2].isascii() and not _word_char_before(text, start):
                end = _iban_at(text, start)
                if end != -1:
                    out.append(EntitySpan(start, end, IBAN_CODE, PATTERN))
        elif crypto and base58check_ok(m.group()):
            out.append(EntitySpan(m.start(), m.end(), CRYPTO, PATTERN))


# --- entry point -----------------------------------------------------------------------------------------

# Order matters for ties: on equal spans the recognizer listed first wins (a MAC before a card number).
_RECOGNIZERS: tuple[tuple[frozenset[str], Callable[[str, bytes, SeedIndex, list[EntitySpan]], None]], ...] = (
    (frozenset({PRIVATE_KEY}), _private_keys),
    (frozenset({API_KEY}), _prefixed_secrets),
    (frozenset({JWT}), _jwts),
    (frozenset({URL}), _urls),
    (frozenset({EMAIL_ADDRESS}), _emails),
    (frozenset({SECRET}), _keyword_secrets),
    (frozenset({CRYPTO}), _crypto),
    (frozenset({MAC_ADDRESS}), _mac_addresses),
    (frozenset({IP_ADDRESS}), _ipv6_addresses),
)


def resolve_overlaps(spans: list[EntitySpan]) -> list[EntitySpan]:
    """Return non-overlapping spans in text order: earliest start wins, then the longest, then the first."""
    spans.sort(key=lambda s: (s.start, s.start - s.end))  # stable: ties keep recognizer order
    kept: list[EntitySpan] = []
    last_end = -1
    for span in spans:
        if span.start >= last_end:
            kept.append(span)
            last_end = span.end
    return kept


def find_patterns(text: str, entities: frozenset[str]) -> list[EntitySpan]:
    """Find every pattern entity of the given types in ``text``.

    Args:
        text: The text to scan (already truncated to the caller's size limit).
        entities: The entity types to report (a subset of ``entities.PATTERN_ENTITIES``).

    Returns:
        Non-overlapping spans sorted by position, each confirmed by its validator.
    """
    found: list[EntitySpan] = []
    # Most scans run on a Latin-1 byte copy: one byte per character keeps the offsets of ``text``, and
    # characters outside Latin-1 become "?", which no expression matches (nor does any non-ASCII byte).
    data = text.encode("latin-1", "replace")
    # Where the recognizers' literal seeds occur: one Hyperscan pass on the first request, if installed.
    seeds = SeedIndex(data)
    for types, recognize in _RECOGNIZERS:
        if types & entities:
            recognize(text, data, seeds, found)
    if entities & _DIGIT_SEEDED_TYPES:
        _digit_seeded(text, data, found, entities)
    if not found:
        return found
    return resolve_overlaps([s for s in found if s.entity_type in entities])


# Joins the texts of one batch. No expression matches NUL, so no entity spans two texts; the few scans
# that search ahead (a private key's END line) are clipped to the text where the entity starts.
_SEPARATOR = "\x00\n"
_tuple_new = tuple.__new__  # an EntitySpan without its Python-level __new__
_BATCH_CHARS = 1 << 20


def find_patterns_many(texts: Sequence[str], entities: frozenset[str]) -> list[Sequence[EntitySpan]]:
    """:func:`find_patterns` for many texts at once: short texts are scanned together.

    Scanning ~1 MB at a time instead of each text on its own saves the fixed cost of every recognizer
    per text, which dominates for prompt-sized texts.
    """
    # One shared empty tuple for the texts without findings (most): no list per text to allocate.
    out: list[Sequence[EntitySpan]] = [()] * len(texts)
    sep = len(_SEPARATOR)
    # Where each text ends in the join of all of them, separators included (no per-text Python loop).
    ends = list(map(add, accumulate(map(len, texts)), count(sep, sep)))
    i, base = 0, 0
    while i < len(texts):
        # A run of texts up to about _BATCH_CHARS (a longer text is scanned alone).
        j = max(bisect_right(ends, base + _BATCH_CHARS + sep, i), i + 1)
        if j == i + 1:
            out[i] = find_patterns(texts[i], entities)
        else:
            group_ends = list(map(sub, ends[i:j], repeat(base, j - i))) if base else ends[i:j]
            k, start_of_text, limit = 0, 0, group_ends[0]
            text_spans: list[EntitySpan] = []
            out[i] = text_spans
            for span in find_patterns(_SEPARATOR.join(texts[i:j]), entities):
                start = span[0]
                if start >= limit:  # spans come in text order: move on to the text holding this one
                    k = bisect_right(group_ends, start, k)
                    start_of_text, limit = group_ends[k - 1], group_ends[k]
                    text_spans = []
                    out[i + k] = text_spans
                end = span[1] - start_of_text
                length = limit - start_of_text - sep
                text_spans.append(
                    _tuple_new(
                        EntitySpan,
                        (start - start_of_text, end if end <= length else length, span[2], span[3]),
                    )
                )
        i, base = j, ends[j - 1]
    return out
