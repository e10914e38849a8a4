"""The Jigsaw bias metrics against hand-computed values (and AUC against scikit-learn's)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from veil_collector.classify.fairness import (
    LabeledText,
    group_aucs,
    power_mean,
    rate_disparity,
    roc_auc,
    summarize,
)

M = frozenset({"muslim"})
NONE: frozenset[str] = frozenset()
# Three texts mention the group (one toxic), three do not (two toxic).
TEXTS = [
    LabeledText(0.9, True, M),
    LabeledText(0.2, False, M),
    LabeledText(0.7, False, M),
    LabeledText(0.8, True, NONE),
    LabeledText(0.3, False, NONE),
    LabeledText(0.6, True, NONE),
]


def test_auc_counts_ties_as_half() -> None:
    # Positive/negative pairs: 0.9>0.1, 0.9>0.4, 0.4>0.1, 0.4=0.4 (half) -> 3.5 of 4.
    assert roc_auc([True, False, True, False], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(0.875)


def test_auc_is_undefined_without_both_classes() -> None:
    assert roc_auc([True, True], [0.1, 0.2]) is None
    assert roc_auc([], []) is None
    with pytest.raises(ValueError, match="differ in length: 2 != 1"):
        roc_auc([True, False], [0.5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])), min_size=2))
def test_auc_equals_sklearn(pairs: list[tuple[bool, float]]) -> None:
    labels = [label for label, _ in pairs]
    scores = [score for _, score in pairs]
    if len(set(labels)) < 2:
        assert roc_auc(labels, scores) is None
    else:
        assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_group_aucs_by_hand() -> None:
    aucs = group_aucs(TEXTS, "muslim")
    # Subgroup: positive 0.9 against negatives 0.2 and 0.7 -> 2/2.
    assert aucs.subgroup_auc == pytest.approx(1.0)
    # BPSN: background positives 0.8, 0.6 against subgroup negatives 0.2, 0.7 -> 0.6<0.7 loses: 3/4.
    assert aucs.bpsn_auc == pytest.approx(0.75)
    # BNSP: subgroup positive 0.9 against background negative 0.3 -> 1/1.
    assert aucs.bnsp_auc == pytest.approx(1.0)
    assert aucs.labeled_texts == 3


def test_power_mean_by_hand() -> None:
    # ((0.5^-5 + 1^-5) / 2)^(-1/5) = 16.5^-0.2
    assert power_mean([0.5, 1.0]) == pytest.approx(16.5**-0.2)
    assert power_mean([0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert power_mean([0.0, 0.9]) == 0.0
    assert power_mean([]) is None
    # p = -5 pulls toward the worst group, far below the arithmetic mean 0.75.
    assert power_mean([0.5, 1.0]) < 0.6


def test_final_score_by_hand() -> None:
    summary = summarize(TEXTS, [group_aucs(TEXTS, "muslim")])
    # Overall: positives 0.9, 0.8, 0.6 against negatives 0.2, 0.7, 0.3 -> 3 + 3 + 2 = 8 of 9.
    assert summary.overall_auc == pytest.approx(8 / 9)
    assert summary.bpsn_power_mean == pytest.approx(0.75)
    assert summary.final_score == pytest.approx(0.25 * 8 / 9 + 0.75 * (1.0 + 0.75 + 1.0) / 3)


def test_final_score_needs_every_part() -> None:
    only_negatives = [LabeledText(0.1, False, M), LabeledText(0.2, False, NONE), LabeledText(0.9, True, NONE)]
    summary = summarize(only_negatives, [group_aucs(only_negatives, "muslim")])
    assert summary.subgroup_power_mean is None  # no toxic subgroup text
    assert summary.final_score is None
    assert summary.overall_auc == pytest.approx(1.0)


def test_rate_disparity_by_hand() -> None:
    # 4 of 10 group texts toxic; 9 of the other 90 -> 0.4 against 0.1.
    view = rate_disparity(group_texts=10, group_toxic=4, total_texts=100, total_toxic=13)
    assert (view.rate, view.background_rate, view.ratio) == pytest.approx((0.4, 0.1, 4.0))
    assert (view.background_texts, view.background_toxic) == (90, 9)
    everyone = rate_disparity(group_texts=5, group_toxic=1, total_texts=5, total_toxic=1)
    assert everyone.background_rate is None and everyone.ratio is None
    with pytest.raises(ValueError, match="inconsistent counts"):
        rate_disparity(group_texts=10, group_toxic=4, total_texts=100, total_toxic=3)
