"""The relay's retry policy: status classes, Retry-After parsing and capping, jittered backoff."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from veil_collector.alert.relay import AttemptResult, Relay, classify, parse_retry_after


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "delivered"), (202, "delivered"), (204, "delivered"), (301, "retry"), (400, "failed"),
     (401, "failed"), (404, "failed"), (410, "disabled"), (413, "failed"), (429, "retry"), (500, "retry"),
     (502, "retry"), (503, "retry"), (0, "retry")],
)  # fmt: skip
def test_status_classes(status: int, outcome: str) -> None:
    assert classify(status) == outcome


def test_retry_after_seconds_and_http_dates() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120.0
    date = format_datetime(datetime.fromtimestamp(now + 30, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    assert parse_retry_after(format_datetime(datetime.fromtimestamp(now - 30, tz=timezone.utc)), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_follows_the_schedule_with_jitter_and_caps_retry_after(tmp_path: Path, store: Any) -> None:
    relay = Relay(tmp_path, store, retry_schedule=(10, 100), jitter=0.2, max_retry_after=60)
    plain = AttemptResult(503, "HTTP 503", None, 1.0)
    first = [relay._delay(1, plain) for _ in range(200)]
    later = [relay._delay(5, plain) for _ in range(200)]  # past the schedule: its last step repeats
    assert min(first) >= 8 and max(first) <= 12 and len(set(first)) > 1
    assert min(later) >= 80 and max(later) <= 120
    assert relay._delay(1, AttemptResult(429, "", 30.0, 1.0)) == 30.0
    assert relay._delay(1, AttemptResult(429, "", 7200.0, 1.0)) == 60.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"workers": 0}, "workers"), ({"timeout": 0}, "timeout"), ({"retry_schedule": ()}, "retry_schedule"),
     ({"jitter": 1.5}, "jitter"), ({"max_attempts": 0}, "max_attempts")],
)  # fmt: skip
def test_bad_relay_settings_are_refused(
    tmp_path: Path, store: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Relay(tmp_path, store, **kwargs)
