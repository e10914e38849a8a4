"""The interface every text classifier of this package offers (detoxify models and the fallback)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

# A toxicity model's precision (``classify.toxicity`` says what each means); here, away from torch, so that
# the settings can name it too.
Precision = Literal["auto", "fp32", "bf16", "int8"]


class ModelIdentity(Protocol):
    """What every scorer names about itself on each row it produces."""

    name: str
    version: str


@runtime_checkable
class TextClassifier(Protocol):
    """Scores texts with every label the model has.

    Attributes:
        name: the model's name as stored in ``evaluations.ModelName`` (e.g. ``detoxify-original``).
        version: what exactly produced the scores, stored in ``evaluations.ModelVersion``.
        labels: the toxicity labels, in the model's output order.
        identity_labels: identity-group heads the model has (the ``unbiased`` family); empty otherwise.
    """

    name: str
    version: str
    labels: tuple[str, ...]
    identity_labels: tuple[str, ...]

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """One ``{label: probability}`` per text, in input order, with every label in ``labels`` and
        ``identity_labels``. Thread-safe."""
        ...
