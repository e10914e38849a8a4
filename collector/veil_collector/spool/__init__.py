"""The durable spool between the OTLP receiver and the ClickHouse drain."""

from __future__ import annotations

from veil_collector.spool.frame import Record
from veil_collector.spool.spool import Spool, SpoolCorrupt, SpoolError, SpoolFailed, SpoolFull

__all__ = ["Record", "Spool", "SpoolCorrupt", "SpoolError", "SpoolFailed", "SpoolFull"]
