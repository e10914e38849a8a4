"""Keeping the cyclic garbage collector's full passes short in the collector's long-lived processes.

A full (generation 2) pass walks every container object the process holds. After start-up that is mostly
what start-up loaded and never frees: modules, compiled patterns, the NER pipeline and, in a process that
imports torch and transformers, several hundred thousand more (429,000 objects and a 190 ms pass on this
project's CPU box with the classifier's imports, in a one-off timing of ``gc.collect()``). Under load such
a pass runs every few seconds and stops every request in flight for its whole length: it was the 250 ms
p99 of ``POST /v1/guard`` at 64 clients (``bench/results/guard_latency.md``).
"""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the per-request hot path of a long-lived process; call it
    once start-up is done.

    ``gc.freeze()`` moves everything allocated so far out of the collector's reach, so full passes no
    longer walk it; the higher first threshold makes the young-generation passes rarer while a request's
    short-lived objects (decoded spans, scrub results) come and go by reference counting anyway. Cycles
    are still collected, just less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
