"""Query parameters shared by the read routes: the time window every listing and aggregate takes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated

from fastapi import HTTPException, Query, status

from veil_collector.store.queries import to_unix_nanos

DEFAULT_WINDOW = timedelta(hours=24)

Start = Annotated[
    datetime | None,
    Query(description="Window start, ISO 8601 (UTC when no offset is given). Default: `end` minus 24 hours."),
]
End = Annotated[datetime | None, Query(description="Window end (exclusive), ISO 8601. Default: now.")]


def resolve_window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The requested window with its defaults filled in; 400 when it is empty."""
    end = end or datetime.now(timezone.utc)
    start = start or end - DEFAULT_WINDOW
    if to_unix_nanos(end) <= to_unix_nanos(start):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"end ({end.isoformat()}) must be after start ({start.isoformat()})",
        )
    return start, end
