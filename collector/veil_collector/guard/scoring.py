"""Guard scores from the classifiers: ``toxicity`` and ``bias`` for a batch of texts.

Shared by the collector's ``POST /v1/guard`` (behind its micro-batcher) and by the SDK when the
collector's models are installed in the application's own process, so both give the same scores.

- ``toxicity``: the highest of the toxicity model's labels (toxicity, severe_toxicity, obscene, threat,
  insult, identity_attack, ...), the rule LLM Guard's Toxicity scanner applies.
- ``bias``: with a bias model, its probability of the biased class. Without one, toxicity aimed at an
  identity group: the model's ``identity_attack`` head, raised to the overall toxicity when the identity
  lexicon finds a group mentioned in the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from veil_collector.classify.base import TextClassifier
from veil_collector.classify.identity import IdentityLexicon

CHECKS: tuple[str, ...] = ("toxicity", "bias")


@dataclass(frozen=True, slots=True)
class TextScores:
    """The classifiers' view of one text: the check scores and the labels behind them.

    Attributes:
        toxicity: In [0, 1].
        bias: In [0, 1]; None when bias was not asked for.
        labels: Every underlying label score (toxicity heads; ``bias.<label>`` of a bias model;
            ``identity.<group>`` = 1.0 for each identity group the lexicon found).
    """

    toxicity: float
    bias: float | None
    labels: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoreItem:
    """One text to score, and whether its bias score is wanted (a bias model costs a second pass)."""

    text: str
    bias: bool


class Scorer:
    """Turns classifier outputs into the guard's check scores.

    Args:
        toxicity: The toxicity classifier (detoxify or the offline fallback).
        identity: The identity-group lexicon, used by ``bias`` without a bias model.
        bias_model: An optional text-classification bias model.
    """

    def __init__(
        self,
        toxicity: TextClassifier,
        *,
        identity: IdentityLexicon | None = None,
        bias_model: TextClassifier | None = None,
    ) -> None:
        self.toxicity = toxicity
        self._identity = identity if identity is not None else IdentityLexicon()
        self._bias_model = bias_model

    @property
    def model(self) -> str:
        """The toxicity model as ``name@version``."""
        return f"{self.toxicity.name}@{self.toxicity.version}"

    def score(self, items: Sequence[ScoreItem]) -> list[TextScores]:
        """One :class:`TextScores` per item, in order; one classifier call for the whole batch."""
        texts = [item.text for item in items]
        toxicity = self.toxicity.predict(texts)
        biased = [i for i, item in enumerate(items) if item.bias]
        bias_labels: dict[int, dict[str, float]] = {}
        groups: dict[int, dict[str, float]] = {}
        if biased and self._bias_model is not None:
            predicted = self._bias_model.predict([texts[i] for i in biased])
            bias_labels = dict(zip(biased, predicted, strict=True))
        elif biased:
            groups = dict(zip(biased, self._identity.predict([texts[i] for i in biased]), strict=True))
        results = []
        for i, labels in enumerate(toxicity):
            tox = max((labels[label] for label in self.toxicity.labels if label in labels), default=0.0)
            bias: float | None = None
            all_labels = dict(labels)
            if i in bias_labels:
                bias = _biased_probability(bias_labels[i])
                all_labels.update({f"bias.{k}": v for k, v in bias_labels[i].items()})
            elif items[i].bias:
                bias = labels.get("identity_attack", 0.0)
                if groups.get(i):
                    bias = max(bias, tox)
                    all_labels.update({f"identity.{g}": 1.0 for g in groups[i]})
            results.append(TextScores(toxicity=tox, bias=bias, labels=all_labels))
        return results


def _biased_probability(labels: dict[str, float]) -> float:
    """P(biased) from a bias model's labels (``BIASED``/``NEUTRAL`` or similar)."""
    lowered = {k.lower(): v for k, v in labels.items()}
    if "biased" in lowered:
        return lowered["biased"]
    for neutral in ("neutral", "non-biased", "unbiased"):
        if neutral in lowered:
            return 1.0 - lowered[neutral]
    return max(lowered.values(), default=0.0)
