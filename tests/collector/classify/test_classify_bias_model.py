"""The optional Hugging Face "bias" text classifier, loaded from a local folder through the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_detoxify import write_tiny_text_classifier

from veil_collector.classify.bias_model import BiasClassifier
from veil_collector.classify.loader import ModelUnavailable


def test_scores_every_label_in_order(tmp_path: Path) -> None:
    folder = write_tiny_text_classifier(tmp_path / "distil-bias", ["NEUTRAL", "BIASED"])
    classifier = BiasClassifier(str(folder))
    assert classifier.name == "distil-bias"
    assert classifier.labels == ("NEUTRAL", "BIASED")
    results = classifier.predict(["you are nice", "women are bad at code " * 200, ""])
    assert len(results) == 3
    for scores in results:
        assert set(scores) == {"NEUTRAL", "BIASED"}
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)  # softmax over the labels
    assert classifier.predict([]) == []


def test_missing_model_is_unavailable_offline() -> None:
    with pytest.raises(ModelUnavailable, match="cannot load bias model 'nobody/no-such-model'"):
        BiasClassifier("nobody/no-such-model")
