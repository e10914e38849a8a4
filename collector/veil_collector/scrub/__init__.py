"""The collector's PII stage (the engine itself is ``veil.pii``, shared with the SDK).

Call signatures used by the ingest path:

* ``ServerScrubber.from_settings(settings)`` (or ``ServerScrubber(ner_enabled=..., spacy_model=...)``);
* ``scrubber.fast_pass(request: ExportTraceServiceRequest) -> PassResult`` in the OTLP route, after
  decoding and before ``spool.append``: pattern pass over every string value, in place;
* ``scrubber.ner_pass(request: ExportTraceServiceRequest) -> PassResult`` in the drain, before flattening:
  NER over the content attributes, batched across the request, in place;
* ``pii_findings_for_span(project_id=, timestamp=, trace_id=, span_id=, service_name=, attributes=,
  veil_batch=) -> list[PiiFinding]`` in the flattener, for the ``pii_findings`` table.
"""

from __future__ import annotations

from veil_collector.scrub.passes import PassResult, ServerScrubber
from veil_collector.scrub.rows import pii_findings_for_span

__all__ = ["PassResult", "ServerScrubber", "pii_findings_for_span"]
