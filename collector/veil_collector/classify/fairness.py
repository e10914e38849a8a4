"""The Jigsaw Unintended Bias metrics, as pure functions.

Definitions (Borkan et al. 2019; the Kaggle "Jigsaw Unintended Bias in Toxicity Classification" metric,
restated in detoxify's ``model_eval/compute_bias_metric.py``). A text is *in subgroup g* when it mentions
g; the *background* is every text that does not. Labels are human toxicity labels (positive = toxic),
scores are the model's toxicity probabilities.

- Subgroup AUC = AUC over subgroup texts only.
- BPSN AUC (background positive, subgroup negative) = AUC over toxic background texts and non-toxic
  subgroup texts. Low: non-toxic mentions of g outscore toxic background texts (false positives).
- BNSP AUC (background negative, subgroup positive) = AUC over non-toxic background texts and toxic
  subgroup texts. Low: toxic mentions of g score below non-toxic background texts (false negatives).
- Generalized mean of a metric over N groups: ``M_p = (sum(m_g ** p) / N) ** (1 / p)`` with ``p = -5``.
- Final score = ``0.25 * overall AUC + 0.75 * mean(M_p(subgroup), M_p(BPSN), M_p(BNSP))``.

Without human labels only the rate view is available: the share of texts the model scores toxic among
texts mentioning g, against the same share among background texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

POWER = -5.0
OVERALL_WEIGHT = 0.25


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve: the probability that a random positive outscores a random negative.

    Ties count one half (the Mann-Whitney U statistic, equal to sklearn's ``roc_auc_score``).

    Returns:
        The AUC in [0, 1], or None when ``labels`` lacks positives or negatives (AUC is undefined).

    Raises:
        ValueError: ``labels`` and ``scores`` differ in length.
    """
    if len(labels) != len(scores):
        raise ValueError(f"labels and scores differ in length: {len(labels)} != {len(scores)}")
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    # Rank-sum with average ranks for ties: O(n log n).
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        average_rank = (i + j) / 2 + 1
        rank_sum += average_rank * sum(1 for k in range(i, j + 1) if labels[order[k]])
        i = j + 1
    u = rank_sum - positives * (positives + 1) / 2
    return u / (positives * negatives)


def power_mean(values: Iterable[float], p: float = POWER) -> float | None:
    """The generalized mean ``(sum(v ** p) / n) ** (1 / p)``; None for no values.

    With ``p = -5`` the worst values dominate. A zero value makes the mean zero (the limit).
    """
    items = list(values)
    if not items:
        return None
    if p < 0 and any(v == 0 for v in items):
        return 0.0
    return (sum(v**p for v in items) / len(items)) ** (1 / p)


@dataclass(frozen=True, slots=True)
class LabeledText:
    """One scored text with a human label: the input of the AUC metrics."""

    score: float
    toxic: bool
    groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class GroupAUCs:
    """The three Jigsaw AUCs for one group; None where a needed class is absent."""

    subgroup_auc: float | None
    bpsn_auc: float | None
    bnsp_auc: float | None
    labeled_texts: int


def group_aucs(texts: Sequence[LabeledText], group: str) -> GroupAUCs:
    """Subgroup, BPSN and BNSP AUC of ``group`` over labeled ``texts`` (definitions in the module doc)."""
    subgroup = [t for t in texts if group in t.groups]
    background = [t for t in texts if group not in t.groups]
    bpsn = [t for t in background if t.toxic] + [t for t in subgroup if not t.toxic]
    bnsp = [t for t in background if not t.toxic] + [t for t in subgroup if t.toxic]
    return GroupAUCs(
        subgroup_auc=_auc(subgroup),
        bpsn_auc=_auc(bpsn),
        bnsp_auc=_auc(bnsp),
        labeled_texts=len(subgroup),
    )


def _auc(texts: Sequence[LabeledText]) -> float | None:
    return roc_auc([t.toxic for t in texts], [t.score for t in texts])


@dataclass(frozen=True, slots=True)
class BiasSummary:
    """The overall AUC, the power means of each bias AUC across groups, and the final Jigsaw score.

    A power mean covers the groups where that AUC is defined; ``final_score`` is None unless all four parts
    are defined.
    """

    overall_auc: float | None
    subgroup_power_mean: float | None
    bpsn_power_mean: float | None
    bnsp_power_mean: float | None
    final_score: float | None


def summarize(texts: Sequence[LabeledText], per_group: Iterable[GroupAUCs], p: float = POWER) -> BiasSummary:
    """Combine per-group AUCs into the Jigsaw final score (weights 0.25 each, power ``p``)."""
    groups = list(per_group)
    overall = _auc(texts)
    means = [
        power_mean((v for v in values if v is not None), p)
        for values in (
            [g.subgroup_auc for g in groups],
            [g.bpsn_auc for g in groups],
            [g.bnsp_auc for g in groups],
        )
    ]
    defined = [m for m in means if m is not None]
    final = None
    if overall is not None and len(defined) == len(means):
        final = OVERALL_WEIGHT * overall + (1 - OVERALL_WEIGHT) * sum(defined) / len(defined)
    return BiasSummary(
        overall_auc=overall,
        subgroup_power_mean=means[0],
        bpsn_power_mean=means[1],
        bnsp_power_mean=means[2],
        final_score=final,
    )


@dataclass(frozen=True, slots=True)
class RateDisparity:
    """Toxic share among texts mentioning a group against the share among the rest (the background).

    ``ratio`` is ``rate / background_rate``: above 1, texts mentioning the group are flagged more often.
    None where a denominator is zero.
    """

    texts: int
    toxic: int
    rate: float | None
    background_texts: int
    background_toxic: int
    background_rate: float | None
    ratio: float | None


def rate_disparity(group_texts: int, group_toxic: int, total_texts: int, total_toxic: int) -> RateDisparity:
    """The rate view for one group from counts (the background is the total minus the group).

    Raises:
        ValueError: counts are negative or inconsistent (more toxic than texts, group larger than total).
    """
    consistent = (
        0 <= group_toxic <= group_texts <= total_texts
        and group_toxic <= total_toxic <= total_texts
        and group_texts - group_toxic <= total_texts - total_toxic
    )
    if not consistent:
        raise ValueError(
            f"inconsistent counts: group {group_toxic}/{group_texts} toxic, total {total_toxic}/{total_texts}"
        )
    background_texts = total_texts - group_texts
    background_toxic = total_toxic - group_toxic
    rate = group_toxic / group_texts if group_texts else None
    background_rate = background_toxic / background_texts if background_texts else None
    ratio = rate / background_rate if rate is not None and background_rate else None
    return RateDisparity(
        texts=group_texts,
        toxic=group_toxic,
        rate=rate,
        background_texts=background_texts,
        background_toxic=background_toxic,
        background_rate=background_rate,
        ratio=ratio,
    )
