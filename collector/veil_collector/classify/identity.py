"""Which Jigsaw identity groups a text mentions, from a documented term lexicon.

Used when the toxicity model has no identity heads (only detoxify's ``unbiased`` family has them). The
groups are the nine Jigsaw Unintended Bias identities with more than 500 test examples, named exactly as
the ``unbiased`` model's heads so rows from either source aggregate together.

Matching rules: case-insensitive, whole words only (``\\b`` on both sides, so "manage" is not "man" and
"Christianity" is not "Christian" unless listed); regular plurals and the listed irregular ones match.
Color words alone are ambiguous ("a black car"), so ``black`` and ``white`` match only as group nouns
("black people", "white women", "blacks", "African Americans", "Caucasians"). Pronouns are not counted.
A lexicon finds mentions, not attitudes: "women" in a recipe counts. Terms are English only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

IDENTITY_GROUPS: tuple[str, ...] = (
    "male",
    "female",
    "homosexual_gay_or_lesbian",
    "christian",
    "jewish",
    "muslim",
    "black",
    "white",
    "psychiatric_or_mental_illness",
)

LEXICON_NAME = "veil-identity-lexicon"
LEXICON_VERSION = "1"

_PEOPLE = (
    r"(?:people|persons?|m[ae]n|wom[ae]n|boys?|girls?|folks?|americans?|kids?|children|child|famil(?:y|ies)"
    r"|communit(?:y|ies)|neighbou?rhoods?|voters?|students?|guys?|lives)"
)

# Regex fragments per group; each is wrapped in word boundaries. "s?" marks a regular plural.
_TERMS: dict[str, tuple[str, ...]] = {
    "male": (
        r"m[ae]n",
        r"males?",
        r"boys?",
        r"guys?",
        r"gentlem[ae]n",
        r"husbands?",
        r"fathers?",
        r"sons?",
        r"brothers?",
        r"masculine",
        r"masculinity",
    ),
    "female": (
        r"wom[ae]n",
        r"females?",
        r"girls?",
        r"lad(?:y|ies)",
        r"wi(?:fe|ves)",
        r"mothers?",
        r"daughters?",
        r"sisters?",
        r"feminine",
        r"femininity",
    ),
    "homosexual_gay_or_lesbian": (
        r"gays?",
        r"lesbians?",
        r"homosexuals?",
        r"homosexuality",
        r"bisexuals?",
        r"queers?",
        r"lgbt(?:q|qi|qia)?\+?",
        r"same[- ]sex",
    ),
    "christian": (
        r"christians?",
        r"christianity",
        r"catholics?",
        r"catholicism",
        r"protestants?",
        r"evangelicals?",
        r"baptists?",
        r"mormons?",
    ),
    "jewish": (r"jews?", r"jewish", r"judaism", r"rabbis?", r"synagogues?"),
    "muslim": (r"muslims?", r"moslems?", r"islam", r"islamic", r"mosques?", r"imams?"),
    "black": (rf"black {_PEOPLE}", r"blacks", r"african[- ]americans?"),
    "white": (rf"white {_PEOPLE}", r"whites", r"caucasians?", r"white supremacists?", r"white nationalists?"),
    "psychiatric_or_mental_illness": (
        r"mental(?:ly)? ill(?:ness|nesses)?",
        r"mental (?:disorders?|health (?:issues?|problems?|conditions?))",
        r"psychiatric",
        r"schizophreni(?:a|cs?)",
        r"bipolar",
        r"psychotic",
        r"psychosis",
        r"ptsd",
        r"ocd",
        r"(?:clinical(?:ly)? )?depressed",
        r"anorexi(?:a|cs?)",
    ),
}

_PATTERNS: dict[str, re.Pattern[str]] = {
    group: re.compile(r"\b(?:" + "|".join(_TERMS[group]) + r")\b", re.IGNORECASE) for group in IDENTITY_GROUPS
}


def mentioned_groups(text: str) -> tuple[str, ...]:
    """The identity groups ``text`` mentions, in :data:`IDENTITY_GROUPS` order."""
    return tuple(group for group in IDENTITY_GROUPS if _PATTERNS[group].search(text))


class IdentityLexicon:
    """The lexicon as a scorer: ``{group: 1.0}`` for each mentioned group (absent groups are omitted).

    Attributes:
        name: stored as ``ModelName``.
        version: bumped whenever the term lists change, so old and new rows can be told apart.
    """

    name = LEXICON_NAME
    version = LEXICON_VERSION

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [dict.fromkeys(mentioned_groups(text), 1.0) for text in texts]
