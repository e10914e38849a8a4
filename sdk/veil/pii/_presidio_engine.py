"""Presidio's spaCy NLP engine for a pipeline that runs only the ``ner`` component.

Imported only by :class:`veil.pii.ner.NerTier` when it builds its engine: it imports Presidio and spaCy.
"""

from __future__ import annotations

from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine
from spacy.tokens import Doc


class EntitiesOnlyNlpEngine(SpacyNlpEngine):
    """:class:`SpacyNlpEngine` without the per-token work a ``ner``-only pipeline has no use for.

    The stock engine reads every token's lemma and offset as Python ``Token`` objects: 7 % of the NER tier's
    time on ``bench/pii_speed.py``'s PII-dense texts (0.865 against 0.803 s for ``nlp.pipe`` alone, one-off
    run). Without a lemmatizer every lemma is ``""``, so they are given as such, and the offsets come from
    one array. Entities and scores are computed exactly as the stock engine does (tested against it).
    """

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        entities, scores = self._get_updated_entities(
            self._get_entities(doc), self._get_scores_for_entities(doc)
        )
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=doc.to_array("IDX").tolist(),
            lemmas=[""] * len(doc),
            nlp_engine=self,
            language=language,
            scores=scores,
        )
