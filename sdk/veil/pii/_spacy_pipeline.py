"""The spaCy pipeline of the NER tier: the ``ner`` component alone, on numpy's BLAS, decoded in numpy.

Imported only by :class:`veil.pii.ner.NerTier` when it builds its engine: it imports spaCy and thinc.
"""

from __future__ import annotations

from typing import Any

COMPONENT = "ner"


def load_ner_pipeline(model: str) -> Any:
    """Load the spaCy model ``model`` with only its entity recognizer, as the NER tier runs it.

    The parser, tagger and lemmatizer are left out: Presidio reads nothing but ``doc.ents``.

    The layers are built on thinc's numpy backend without BLIS (``use_blis=False``): their matrix products
    go to numpy's OpenBLAS, which picks its kernels for the CPU at run time. The BLIS that thinc ships does
    not recognise this project's AMD EPYC (Zen 4, family 0x19 model 0x11) and runs its generic kernels
    (``BLIS_ARCH_DEBUG=1`` prints "generic"; this build reads no ``BLIS_ARCH_TYPE``): 8000x288 by 288x288
    took 38.6 against numpy's 13.6 ms, and the NER pass ran 1.28x faster on numpy.

    The recognizer's greedy transition loop is replaced by
    :class:`~veil.pii._ner_decoder.GreedyEntityDecoder` (same entities, see there why) under the same
    component name, unless the model's architecture is one that decoder does not reproduce.

    Args:
        model: An installed spaCy model package name or a model directory.

    Returns:
        The loaded ``spacy.Language``.
    """
    import spacy
    from thinc.api import use_ops

    from veil.pii._ner_decoder import FACTORY, UnsupportedModelError

    with use_ops("numpy", use_blis=False):
        nlp = spacy.load(model)
    nlp.select_pipes(enable=[COMPONENT])
    try:
        nlp.add_pipe(FACTORY, name=FACTORY, after=COMPONENT)
    except UnsupportedModelError:
        return nlp  # spaCy's own decoder
    nlp.remove_pipe(COMPONENT)
    nlp.rename_pipe(FACTORY, COMPONENT)
    return nlp
