"""Where the seeds of the pattern recognizers occur in a text: one Hyperscan pass, or ``re``.

Most pattern recognizers start every match with one of a few literals (``sk-``, ``eyJ``, ``://``, the
keyword stems, ...) or, for MAC and IPv6 addresses, a short fixed-width run of hex digits and separators.
Scanning the text once per literal with ``re`` costs about 0.3 ns per byte per literal; Hyperscan finds
all of them in one pass. :class:`SeedIndex` gives, per seed, the sorted start offsets of all its
occurrences (overlapping ones included) in a Latin-1 byte copy of the text:

* with Hyperscan (``pip install hyperscan``, x86-64 only; the collector extra requires it), one block-mode
  scan of a database of every seed, on the first request for a position. The database is compiled by the
  first scan of the process, not at import (about 50 ms, which an app that never scrubs should not pay).
  Every seed expression has a fixed width, so a start is its match's end minus that width (no
  start-of-match tracking);
* without it, ``re`` over the one seed asked for, only when asked (recognizers that would gain nothing
  from a position list keep scanning with their own expression: :attr:`SeedIndex.indexed` says which).

Both give the same positions. Caseless seeds (the keyword stems) match ASCII letters in either case,
which is what searching ``data.lower()`` finds: lowering bytes keeps offsets.

The environment variable ``VEIL_PII_HYPERSCAN=0`` (read once, at import) forces the ``re`` backend even
where Hyperscan is installed; :func:`use_hyperscan` switches at run time (for tests and benchmarks).
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections import defaultdict
from typing import Any

__all__ = [
    "AWS_GOOGLE",
    "BECH32",
    "CREDENTIAL",
    "ETH",
    "EYJ",
    "GITHUB",
    "KEY",
    "MAC_COLON",
    "MAC_DASH",
    "OPENAI",
    "PASS",
    "PWD",
    "SCHEME_SEP",
    "SECRET",
    "SEEDS",
    "SLACK",
    "SLACK_HOOK",
    "STRIPE",
    "TOKEN",
    "V6",
    "Seed",
    "SeedIndex",
    "backend",
    "hyperscan_available",
    "use_hyperscan",
]


class Seed:
    """Literals, or fixed-width expressions, whose occurrences a recognizer visits (one sorted list).

    Args:
        literals: The byte strings (a Latin-1 text's byte copy is searched).
        caseless: Whether ASCII letters match in either case.
        expressions: Instead of literals: (expression, width) pairs, each expression matching exactly
            ``width`` bytes wherever it matches, in the syntax both ``re`` and Hyperscan read the same
            way (literal bytes, character classes and fixed repeats ``{n}`` with n >= 1).
    """

    __slots__ = ("_pattern", "caseless", "expressions", "id", "literals")

    def __init__(
        self, *literals: bytes, caseless: bool = False, expressions: tuple[tuple[bytes, int], ...] = ()
    ) -> None:
        if caseless and any(literal != literal.lower() for literal in literals):
            raise ValueError("a caseless seed is searched for in lowered text: give it in lower case")
        self.id = len(SEEDS)
        self.literals = literals
        self.caseless = caseless
        self.expressions = tuple((re.escape(literal), len(literal)) for literal in literals) + expressions
        # The ``re`` backend: a literal that can overlap itself ("AKIAKIA"), several literals or an
        # expression need a lookahead so that finditer reports every start; a single literal is searched
        # as itself, which ``re`` finds with its fast prefix search.
        alternatives = b"|".join(expression for expression, _ in self.expressions)
        overlapping = len(self.expressions) > 1 or bool(expressions) or _has_border(literals[0])
        self._pattern = re.compile(b"(?=%s)" % alternatives if overlapping else alternatives)
        SEEDS.append(self)

    def __repr__(self) -> str:
        return f"Seed{self.literals or self.expressions!r}"


def _has_border(literal: bytes) -> bool:
    """Whether a proper prefix of ``literal`` is also its suffix (two occurrences can overlap)."""
    return any(literal[:k] == literal[-k:] for k in range(1, len(literal)))


SEEDS: list[Seed] = []

# _prefixed_secrets: each seed is the set of strings its expression can start with (an expression that
# starts with "A(?:KIA|SIA|Iza)" has three); longer seeds than the expression's own literal prefix
# ("ghp_" rather than "gh") keep the hits that cannot match (English "gh") out of the Python loop.
OPENAI = Seed(b"sk-")
AWS_GOOGLE = Seed(b"AKIA", b"ASIA", b"AIza")
GITHUB = Seed(b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_")
SLACK = Seed(*(b"xox%c-" % c for c in b"abposre"))
SLACK_HOOK = Seed(b"https://hooks.slack.com/")
STRIPE = Seed(b"k_live_", b"k_test_")
# _jwts, _urls, _crypto
EYJ = Seed(b"eyJ")
SCHEME_SEP = Seed(b"://")
BECH32 = Seed(b"bc1")
ETH = Seed(b"0x")
# _mac_addresses: the five separators and hex pairs after a MAC's first pair (one expression per
# separator, as the recognizer's).
_HEX = b"[0-9A-Fa-f]"
MAC_COLON = Seed(expressions=((b":%s{2}" % _HEX * 5, 15),))
MAC_DASH = Seed(expressions=((b"-%s{2}" % _HEX * 5, 15),))
# _ipv6_addresses: where its seed expression ":(?::|h{1,4}:h{0,4}:)" can match, as fixed widths (the
# recognizer matches the expression itself at each start).
_V6_RUNS = tuple(
    (b":%s{%d}:" % (_HEX, head) + (b"%s{%d}" % (_HEX, tail) if tail else b"") + b":", head + tail + 3)
    for head in range(1, 5)
    for tail in range(5)
)
V6 = Seed(expressions=((b"::", 2), *_V6_RUNS))
# _keyword_secrets
PASS = Seed(b"pass", caseless=True)
PWD = Seed(b"pwd", caseless=True)
SECRET = Seed(b"secret", caseless=True)
TOKEN = Seed(b"token", caseless=True)
KEY = Seed(b"key", caseless=True)
CREDENTIAL = Seed(b"credential", caseless=True)


# The start list of every seed without hits (shared: SeedIndex.starts's lists are read-only).
_NONE: list[int] = []


def _compile_database() -> tuple[Any, list[tuple[int, int]]]:
    """The Hyperscan block-mode database of every seed expression.

    Returns:
        The database and, per expression id, its seed's id and the expression's width.
    """
    import hyperscan

    expressions: list[bytes] = []
    flags: list[int] = []
    owners: list[tuple[int, int]] = []
    for seed in SEEDS:
        for expression, width in seed.expressions:
            expressions.append(expression)
            flags.append(hyperscan.HS_FLAG_CASELESS if seed.caseless else 0)
            owners.append((seed.id, width))
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=list(range(len(expressions))), flags=flags)
    return database, owners


_AVAILABLE = importlib.util.find_spec("hyperscan") is not None
_enabled = _AVAILABLE and os.environ.get("VEIL_PII_HYPERSCAN", "1").strip() != "0"
_compiled: tuple[Any, list[tuple[int, int]]] | None = None
_compile_lock = threading.Lock()
# Hyperscan's scratch space serves one scan at a time, and the binding releases the GIL while it
# scans: one scratch per thread.
_local = threading.local()


def hyperscan_available() -> bool:
    """Whether the ``hyperscan`` package is installed (whether or not it is in use)."""
    return _AVAILABLE


def _database() -> tuple[Any, list[tuple[int, int]]]:
    """The compiled database, compiled by the first caller."""
    global _compiled
    if _compiled is None:
        with _compile_lock:
            if _compiled is None:
                _compiled = _compile_database()
    return _compiled


def backend() -> str:
    """The backend new :class:`SeedIndex` objects use: ``"hyperscan"`` or ``"re"``."""
    return "hyperscan" if _enabled else "re"


def use_hyperscan(enabled: bool) -> None:
    """Switch the backend of new :class:`SeedIndex` objects (tests and benchmarks compare both).

    Raises:
        RuntimeError: Hyperscan is asked for but not installed.
    """
    global _enabled
    if enabled and not _AVAILABLE:
        raise RuntimeError("hyperscan is not installed")
    _enabled = enabled


def _scratch() -> Any:
    scratch = getattr(_local, "scratch", None)
    if scratch is None:
        import hyperscan

        scratch = _local.scratch = hyperscan.Scratch(_database()[0])
    return scratch


class SeedIndex:
    """The start offsets of the seeds in one Latin-1 byte string, computed on first request.

    Args:
        data: The Latin-1 byte copy of the text (one byte per character, so offsets are the text's).

    Attributes:
        indexed: True when all seeds are found in one pass (Hyperscan): visiting a seed's positions is
            then cheaper than any scan. With ``re``, each seed costs a scan, so a recognizer that can
            scan with its own expression instead (``finditer``) should.
    """

    __slots__ = ("_data", "_lowered", "_starts", "indexed")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._lowered: bytes | None = None
        self._starts: list[list[int] | None] | None = None
        self.indexed = _enabled

    def starts(self, seed: Seed) -> list[int]:
        """Return the sorted start offsets of every occurrence of ``seed``'s literals.

        The list is shared: callers must not change it.
        """
        if self._starts is None:
            self._starts = self._scan() if self.indexed else [None] * len(SEEDS)
        found = self._starts[seed.id]
        if found is None:
            found = self._starts[seed.id] = self._search(seed)
        return found

    def _scan(self) -> list[list[int] | None]:
        """Every seed's starts from one Hyperscan pass."""
        database, owners = _database()
        ends: defaultdict[int, list[int]] = defaultdict(list)
        # The binding calls back into Python once per hit: keep it to one append (a list only for the
        # expressions with hits; most texts have none).
        database.scan(
            self._data,
            lambda expression, _start, end, _flags, _context: ends[expression].append(end),
            0,
            None,
            _scratch(),
        )
        starts: list[list[int] | None] = [_NONE] * len(SEEDS)
        for expression, expression_ends in ends.items():
            seed_id, length = owners[expression]
            found = [end - length for end in expression_ends]
            if starts[seed_id] is not _NONE:
                found += starts[seed_id]  # type: ignore[operator]
            # Hyperscan does not promise matches in text order, and several literals' hits interleave;
            # a sorted list sorts in one linear pass.
            found.sort()
            starts[seed_id] = found
        return starts

    def _search(self, seed: Seed) -> list[int]:
        """One seed's starts by ``re`` (over the lowered copy for a caseless seed)."""
        source = self._data
        if seed.caseless:
            if self._lowered is None:
                self._lowered = self._data.lower()  # ASCII only: the same offsets
            source = self._lowered
        return list(map(re.Match.start, seed._pattern.finditer(source)))
