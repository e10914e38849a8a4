"""The offline fallback toxicity model: alt-profanity-check's linear model.

alt-profanity-check ships a TF-IDF vectorizer and a calibrated linear SVM trained on toxic-comment data
inside its wheel, so it classifies with no download. It has one output, stored as label ``toxicity``. It
recognises profane wording, not insults or threats phrased politely; it is a floor, not a substitute for
detoxify. It has no identity heads, so identity mentions come from the lexicon.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from importlib.metadata import version

MODEL_NAME = "alt-profanity-check"


class ProfanityClassifier:
    """alt-profanity-check behind the :class:`~veil_collector.classify.base.TextClassifier` interface.

    ``predict`` returns ``{"toxicity": p}`` per text, in input order; thread-safe.
    """

    labels: tuple[str, ...] = ("toxicity",)
    identity_labels: tuple[str, ...] = ()

    def __init__(self) -> None:
        # The package loads its joblib model when imported (about 1 MB, well under a second).
        import profanity_check

        self._predict_prob = profanity_check.predict_prob
        self.name = MODEL_NAME
        self.version = version("alt-profanity-check")
        # scikit-learn's transform is not documented as thread-safe; scoring is cheap, so serialize.
        self._lock = threading.Lock()

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        if not texts:
            return []
        with self._lock:
            probabilities = self._predict_prob(list(texts))
        return [{"toxicity": float(p)} for p in probabilities]
