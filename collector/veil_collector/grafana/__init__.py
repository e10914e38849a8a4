"""Grafana provisioning: push Veil's ClickHouse datasource, folder and dashboards (``veil grafana push``).

The files Grafana reads (``dashboards/provisioning`` and ``dashboards/json``) are the single source: file
provisioning mounts them, and ``push`` reads the same files and creates or updates each object through
Grafana's HTTP API, idempotently.
"""

from veil_collector.grafana.assets import Assets, load_assets
from veil_collector.grafana.push import Action, Change, PluginMissing, plan, push

__all__ = ["Action", "Assets", "Change", "PluginMissing", "load_assets", "plan", "push"]
