"""Greedy decoding of a trained spaCy entity recognizer, vectorised over a batch of documents in numpy.

Imported only by :mod:`veil.pii._spacy_pipeline` when the NER tier builds its engine: it imports spaCy.
Importing it registers the spaCy component factory ``veil_greedy_ner`` (:data:`FACTORY`), which wraps the
pipeline's trained ``ner`` component.

spaCy's own greedy decoder (``Parser._parseC``) is compiled with Cython 3, and in the spaCy 3.8 wheels every
``StateC`` accessor it calls per transition and token (``B_``, ``eol``, ...) takes and drops the GIL twice,
doing nothing in between (``objdump`` shows the empty ``PyGILState_Ensure``/``PyGILState_Release`` pairs):
the loop runs with the GIL released, so each pair is a real mutex and condition-variable round trip.
That made the validity checks cost about 400 ns per transition and token, 46 % of the NER component's time
on ``bench/pii_speed.py``'s texts (py-spy and perf profiles). This decoder computes the same thing on
whole batches: the model's layers as spaCy runs them, then one vectorised step per token position.

What it reproduces, from spaCy's ``ner.pyx``, ``_state.pxd`` and ``parser_model.pyx`` (``predict_states``):

* Features per state: the next token, the first token of the open entity, and the token before the next one
  when an entity is open (``StateC.set_context_tokens`` with three features); absent ones read the padding
  row that the ``lower`` layer puts first. Hidden = maxout over pieces of their sum plus bias; scores =
  ``upper`` applied to hidden; classes never seen in training get the batch's minimum score.
* The best-scoring valid transition is taken (the first one on ties). The BILUO validity rules are those
  of ``Begin``, ``In``, ``Last``, ``Unit`` and ``Out`` for documents without preset entities (the tier's
  documents are made from plain text): B needs no open entity, a next token that starts no sentence and a
  non-space token; I and L need the open entity's label, I also a next token that starts no sentence; U
  needs no open entity and a non-space token; O needs no open entity. Each transition consumes one token,
  so every unfinished document is at the same position at each step.

It only ever differs from spaCy by the float rounding of the ``upper`` product (numpy's BLAS rather than
BLIS), which can only matter on exact ties between the two best transitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import minibatch

__all__ = ["FACTORY", "GreedyEntityDecoder", "UnsupportedModelError"]

FACTORY = "veil_greedy_ner"

_BEGIN, _IN, _LAST, _UNIT, _OUT = "B", "I", "L", "U", "O"
_FEATURES = 3  # spaCy's NER state features: next token, entity start, token before the next


class UnsupportedModelError(ValueError):
    """The entity recognizer is not the greedy, three-feature, maxout model this decoder reproduces."""


class GreedyEntityDecoder:
    """A spaCy pipeline component that sets ``doc.ents`` as a trained ``EntityRecognizer`` would.

    For documents fresh from the tokenizer (no entities set), in batches (:meth:`pipe`) or one at a time.

    Args:
        ner: A trained spaCy ``EntityRecognizer`` (``spacy.TransitionBasedParser`` model with an ``upper``
            layer, maxout pieces, three state features, greedy decoding).

    Raises:
        UnsupportedModelError: For any other architecture or decoding setting.
    """

    def __init__(self, ner: Any) -> None:
        model = ner.model
        lower = model.get_ref("lower") if model.has_ref("lower") else None
        if (
            ner.cfg.get("beam_width", 1) != 1
            or not model.attrs.get("has_upper")
            or lower is None
            or lower.get_dim("nF") != _FEATURES
            or lower.get_dim("nP") < 2
            or type(ner.moves).__name__ != "BiluoPushDown"
        ):
            raise UnsupportedModelError("not a greedy BILUO entity recognizer with maxout state features")
        self._tok2vec = model.get_ref("tok2vec")
        self._lower = lower
        upper = model.get_ref("upper")
        self._upper_w = np.ascontiguousarray(upper.get_param("W").T)
        self._upper_b = upper.get_param("b")
        n_classes = ner.moves.n_moves
        self._seen = np.ones(n_classes, dtype=bool)
        self._seen[list(model.attrs["unseen_classes"])] = False

        names = [ner.moves.get_class_name(i) for i in range(n_classes)]
        moves = [name.partition("-")[0] for name in names]
        if set(moves) - {_BEGIN, _IN, _LAST, _UNIT, _OUT}:
            raise UnsupportedModelError(f"unknown transitions in {names}")
        labels = sorted({name.partition("-")[2] for name in names} - {""})
        self._labels = ["", *labels]  # code 0: no label
        code = {label: i for i, label in enumerate(self._labels)}
        self._move_label = np.array([code[name.partition("-")[2]] for name in names])
        is_move = {move: np.array([m == move for m in moves]) for move in (_BEGIN, _IN, _LAST, _UNIT, _OUT)}
        self._is_begin, self._is_last, self._is_unit = is_move[_BEGIN], is_move[_LAST], is_move[_UNIT]
        self._valid = _validity_table(is_move, self._move_label, len(self._labels))
        self.labels = tuple(ner.labels)

    def __call__(self, doc: Doc) -> Doc:
        """Annotate one document (spaCy's component protocol)."""
        self.annotate([doc])
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        """Annotate documents in batches of ``batch_size`` (spaCy's component protocol)."""
        for batch in minibatch(docs, size=batch_size):
            self.annotate(batch)
            yield from batch

    def annotate(self, docs: Sequence[Doc]) -> None:
        """Annotate ``docs`` (made by the tokenizer, no entities set) with the model's entities, in place."""
        lengths = np.array([len(doc) for doc in docs])
        if not lengths.any():
            for doc in docs:
                doc.set_ents([], default="outside")
            return
        tokvecs = self._tok2vec.predict(list(docs))
        table = self._lower.predict(tokvecs)  # (tokens + 1, features, hidden, pieces); row 0 is padding
        bias = self._lower.get_param("b")
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        # Per token: may an entity start here (B), go on past it (I), be one token long here (U)?
        space = np.concatenate([doc.to_array("IS_SPACE") for doc in docs]).astype(bool)
        next_starts = np.zeros(len(space), dtype=bool)
        next_starts[:-1] = np.concatenate([doc.to_array("SENT_START") for doc in docs])[1:] == 1
        has_next = np.ones(len(space), dtype=bool)
        has_next[offsets + lengths - 1] = False
        go_on = has_next & ~next_starts
        closed_code = 2 * (go_on & ~space) + ~space  # rows 0-3 of the validity table
        open_code = 4 + go_on.astype(np.int64)  # plus twice the open entity's label code
        # Documents longest first, so that the unfinished ones at step t are a prefix.
        order = np.argsort(-lengths, kind="stable")
        lengths, offsets = lengths[order], offsets[order]
        n = len(docs)
        is_open = np.zeros(n, dtype=bool)
        ent_start = np.zeros(n, dtype=np.int64)
        ent_label = np.zeros(n, dtype=np.int64)
        found: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
        pieces = range(1, table.shape[-1])
        for t in range(int(lengths[0])):
            k = int(np.count_nonzero(lengths > t))
            token = offsets[:k] + t
            opened, label = is_open[:k], ent_label[:k]
            ids = np.where(opened, offsets[:k] + ent_start[:k], -1)
            before = np.where(opened, token - 1, -1)
            summed = table[token + 1, 0] + table[ids + 1, 1] + table[before + 1, 2] + bias
            hidden = summed[..., 0]
            for piece in pieces:  # maxout; faster than a reduction over the short last axis
                hidden = np.maximum(hidden, summed[..., piece])
            scores = hidden @ self._upper_w + self._upper_b
            if not self._seen.all():
                scores[:, ~self._seen] = scores.min()
            code = np.where(opened, open_code[token] + 2 * label, closed_code[token])
            guess = np.where(self._valid[code], scores, -np.inf).argmax(axis=1)

            move_label = self._move_label[guess]
            for i in np.flatnonzero(self._is_unit[guess]):
                found[i].append((t, t + 1, int(move_label[i])))
            closes = self._is_last[guess]
            for i in np.flatnonzero(closes):
                found[i].append((int(ent_start[i]), t + 1, int(label[i])))
            begins = np.flatnonzero(self._is_begin[guess])
            ent_start[begins] = t
            ent_label[begins] = move_label[begins]
            is_open[:k] &= ~closes
            is_open[begins] = True
        for i, doc_index in enumerate(order):
            doc = docs[doc_index]
            doc.set_ents(
                [Span(doc, start, end, label=self._labels[code]) for start, end, code in found[i]],
                default="outside",
            )


@Language.factory(FACTORY)
def _make_decoder(nlp: Language, name: str) -> GreedyEntityDecoder:
    """Wrap the pipeline's trained ``ner`` component (raises :class:`UnsupportedModelError`)."""
    return GreedyEntityDecoder(nlp.get_pipe("ner"))


def _validity_table(is_move: dict[str, np.ndarray], move_label: np.ndarray, n_labels: int) -> np.ndarray:
    """Which transitions are valid, per state kind: rows ``2 * b + u`` for a state with no open entity
    (``b``: an entity may start at the next token, ``u``: it is not whitespace), rows ``4 + 2 * label + i``
    for a state with an open entity of that label code (``i``: the entity may go on past the next token).
    """
    labelled = move_label != 0
    rows = []
    for b in (False, True):
        for u in (False, True):
            rows.append(is_move[_OUT] | (is_move[_UNIT] & labelled & u) | (is_move[_BEGIN] & labelled & b))
    for label in range(n_labels):
        same = labelled & (move_label == label)
        for i in (False, True):
            rows.append((is_move[_LAST] & same) | (is_move[_IN] & same & i))
    return np.array(rows)
