"""The identity-term lexicon: groups, word boundaries, plurals, ambiguous color words."""

from __future__ import annotations

import pytest

from veil_collector.classify.identity import IDENTITY_GROUPS, IdentityLexicon, mentioned_groups


@pytest.mark.parametrize(
    ("text", "groups"),
    [
        ("The men and the boys went home.", ("male",)),
        ("Two women, one lady and her daughters.", ("female",)),
        ("Gay and lesbian couples; LGBTQ+ rights.", ("homosexual_gay_or_lesbian",)),
        ("Catholics and Protestants are Christians.", ("christian",)),
        ("A rabbi spoke to Jews at the synagogue.", ("jewish",)),
        ("Muslims pray at mosques.", ("muslim",)),
        ("Black people and African Americans.", ("black",)),
        ("White women voted.", ("female", "white")),
        ("She is mentally ill; schizophrenia is treatable.", ("psychiatric_or_mental_illness",)),
        ("A MUSLIM WOMAN", ("female", "muslim")),
    ],
)
def test_groups(text: str, groups: tuple[str, ...]) -> None:
    assert mentioned_groups(text) == groups


@pytest.mark.parametrize(
    "text",
    [
        "Please manage the mandate of the human resources team.",  # 'man' inside words
        "A black car on a white background.",  # color words alone
        "Gayle islands; jewelry; amenable.",  # prefixes of group terms
        "The function returns None.",
    ],
)
def test_no_false_matches_inside_words_or_on_colors(text: str) -> None:
    assert mentioned_groups(text) == ()


def test_scorer_shape_covers_every_jigsaw_group() -> None:
    assert len(IDENTITY_GROUPS) == 9
    every = "man woman gay christian jew muslim black people white people mental illness"
    (scores,) = IdentityLexicon().predict([every])
    assert scores == dict.fromkeys(IDENTITY_GROUPS, 1.0)
    assert IdentityLexicon().predict(["hello", ""]) == [{}, {}]
