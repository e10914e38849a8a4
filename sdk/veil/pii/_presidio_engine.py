"""Presidio's spaCy NLP engine and context step for a pipeline that runs only the ``ner`` component.

Imported only by :class:`veil.pii.ner.NerTier` when it builds its engine: it imports Presidio and spaCy.
"""

from __future__ import annotations

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine
from spacy.tokens import Doc


class EntitiesOnlyNlpEngine(SpacyNlpEngine):
    """:class:`SpacyNlpEngine` without the per-token work a ``ner``-only pipeline has no use for.

    The stock engine reads every token's lemma and offset as Python ``Token`` objects: 7 % of the NER tier's
    time on ``bench/pii_speed.py``'s PII-dense texts (0.865 against 0.803 s for ``nlp.pipe`` alone, one-off
    run), and the artifacts then derive context keywords from the lemmas (a stop-word and a punctuation
    lookup per token). Without a lemmatizer there are no lemmas, and with :class:`NoContextEnhancer` nothing
    reads lemmas or keywords, so none are given; the offsets come from one array. Entities and scores are
    computed exactly as the stock engine does (tested against it).
    """

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        entities, scores = self._get_updated_entities(
            self._get_entities(doc), self._get_scores_for_entities(doc)
        )
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=doc.to_array("IDX").tolist(),
            lemmas=[],
            nlp_engine=self,
            language=language,
            scores=scores,
        )


class NoContextEnhancer(ContextAwareEnhancer):
    """Presidio's context step for recognizers without context words: the results as they were found.

    Presidio's default (``LemmaContextAwareEnhancer``) deep-copies every text's results and then skips each
    one whose recognizer has no context words, which is all of them for the NER tier's ``SpacyRecognizer``.
    """

    def __init__(self) -> None:
        super().__init__(
            context_similarity_factor=0.0,
            min_score_with_context_similarity=0.0,
            context_prefix_count=0,
            context_suffix_count=0,
        )

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        """Return ``raw_results`` unchanged."""
        return raw_results
