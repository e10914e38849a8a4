"""ClickHouse storage: the client (embedded chDB or a server, chosen by DSN), migrations, writer, queries."""

from veil_collector.store.client import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
