"""The ``insert`` fixture: writes rows built by ``query_rows`` into the test's private database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from query_rows import CALL_COLUMNS, SPAN_COLUMNS

from veil_collector.records import Evaluation, PiiFinding
from veil_collector.store import Store


@pytest.fixture
def insert(store: Store) -> Callable[..., None]:
    """insert(spans=[...], calls=[...], evaluations=[...], pii=[...]) into the test's database."""

    def _insert(
        spans: list[tuple[Any, ...]] = (),
        calls: list[tuple[Any, ...]] = (),
        evaluations: list[Evaluation] = (),
        pii: list[PiiFinding] = (),
    ) -> None:
        store.insert("otel_traces", list(spans), SPAN_COLUMNS)
        store.insert("llm_calls", list(calls), CALL_COLUMNS)
        store.insert(Evaluation.TABLE, [e.as_row() for e in evaluations], Evaluation.COLUMNS)
        store.insert(PiiFinding.TABLE, [p.as_row() for p in pii], PiiFinding.COLUMNS)

    return _insert
