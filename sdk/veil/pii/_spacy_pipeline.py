"""The spaCy pipeline of the NER tier: loaded on numpy's BLAS, cut to the ``ner`` component and its labels.

Imported only by :class:`veil.pii.ner.NerTier` when it builds its engine: it imports spaCy and thinc.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

COMPONENT = "ner"


def load_ner_pipeline(model: str, labels: Collection[str]) -> Any:
    """Load the spaCy model ``model`` with only its ``ner`` component, predicting only ``labels``.

    The layers are built on thinc's numpy backend without BLIS (``use_blis=False``): their matrix products
    go to numpy's OpenBLAS, which picks its kernels for the CPU at run time. The BLIS that thinc ships does
    not recognise this project's AMD EPYC (Zen 4, family 0x19 model 0x11) and runs its generic kernels
    (``BLIS_ARCH_DEBUG=1`` prints "generic"; this build reads no ``BLIS_ARCH_TYPE``): 8000x288 by 288x288
    took 38.6 against numpy's 13.6 ms, and the NER pass ran 1.28x faster on numpy. The transition loop
    still calls BLIS from compiled code, but those calls (the per-step product and feature sums) were about
    5 % of the component's time in a py-spy profile.

    The parser, tagger and lemmatizer are left out (Presidio reads nothing but ``doc.ents``), and the
    entity recognizer is restricted to ``labels`` (see :func:`restrict_labels`).

    Args:
        model: An installed spaCy model package name or a model directory.
        labels: spaCy entity labels to keep; labels the model does not know are ignored.

    Returns:
        The loaded ``spacy.Language``.
    """
    import spacy
    from thinc.api import use_ops

    with use_ops("numpy", use_blis=False):
        nlp = spacy.load(model)
        nlp.select_pipes(enable=[COMPONENT])
        restrict_labels(nlp.get_pipe(COMPONENT), labels)
    return nlp


def restrict_labels(ner: Any, labels: Collection[str]) -> None:
    """Cut a trained spaCy ``EntityRecognizer`` down to the transitions of ``labels``, in place.

    The greedy transition parser checks every transition's validity for every token of every text before
    it takes the best-scoring valid one: with the 18 OntoNotes labels that is 74 transitions (B, I, L, U
    per label, plus O and U-), and that check was 46 % of the component's time in a py-spy profile on
    ``bench/pii_speed.py``'s PII-dense texts (the per-step matrix products were under 5 %). Keeping only
    the transitions of ``labels`` and the output rows that score them makes every step proportionally
    cheaper. The parser still takes the best-scoring valid transition among those kept: wherever the full
    model's best one is kept, the result is the same; where it was a dropped label's, the next best is
    taken instead, so ``labels`` should include the labels whose entities look like the wanted ones.
    """
    from thinc.api import Linear, use_ops

    moves = ner.moves
    names = [moves.get_class_name(i) for i in range(moves.n_moves)]
    kept_labels = {
        action: {label: freq for label, freq in by_label.items() if label == "" or label in labels}
        for action, by_label in moves.labels.items()
    }
    moves.initialize_actions(kept_labels)
    rows = [names.index(moves.get_class_name(i)) for i in range(moves.n_moves)]

    model = ner.model
    upper = model.get_ref("upper")
    with use_ops("numpy", use_blis=False):
        smaller = Linear(len(rows), upper.get_dim("nI"))
    smaller.set_param("W", upper.get_param("W")[rows].copy())
    smaller.set_param("b", upper.get_param("b")[rows].copy())
    model.replace_node(upper, smaller)
    model.attrs["unseen_classes"] = {
        new for new, old in enumerate(rows) if old in model.attrs["unseen_classes"]
    }
