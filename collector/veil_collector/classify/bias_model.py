"""An optional Hugging Face text-classification "bias" model, run through transformers' pipeline.

For example ``valurank/distilroberta-bias`` (LLM Guard's default; labels ``BIASED``/``NEUTRAL``). Such
models are trained on Wikipedia neutral-point-of-view edits or news: they flag non-neutral, opinionated
wording, not demographic unfairness. Their scores are stored as ``Evaluator='bias'``, one row per label.
Texts are truncated at 512 tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from veil_collector.classify.loader import ModelUnavailable


class BiasClassifier:
    """A text-classification pipeline returning every label's probability.

    Args:
        model: a Hub model id (downloaded when online, or read from the Hugging Face cache) or a local
            folder holding the model and tokenizer.
        device: ``cpu``, ``cuda``, ``cuda:N``, ... (as ``torch.device``).
        batch_size: texts per forward pass inside the pipeline.

    Raises:
        ModelUnavailable: the model or its tokenizer could not be loaded.
    """

    def __init__(self, model: str, *, device: str = "cpu", batch_size: int = 32) -> None:
        from transformers import pipeline

        path = Path(model).expanduser()
        try:
            self._pipe = pipeline(
                "text-classification",
                model=str(path) if path.is_dir() else model,
                device=device,
                top_k=None,
            )
        except OSError as exc:
            raise ModelUnavailable(f"cannot load bias model {model!r}: {exc}") from exc
        config = self._pipe.model.config
        self.name = path.name if path.is_dir() else model
        self.version = getattr(config, "_commit_hash", None) or "local"
        self.labels: tuple[str, ...] = tuple(config.id2label[i] for i in sorted(config.id2label))
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """One ``{label: probability}`` per text with every label, in input order; thread-safe."""
        if not texts:
            return []
        with self._lock:
            results = self._pipe(list(texts), batch_size=self.batch_size, truncation=True, max_length=512)
        return [{item["label"]: float(item["score"]) for item in per_text} for per_text in results]
