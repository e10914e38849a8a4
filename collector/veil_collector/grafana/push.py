"""Create or update Veil's datasource, folder and dashboards in Grafana, idempotently.

``plan`` only reads (``GET``) and compares what Grafana holds with what the files say; ``push`` applies
the plan. Objects are addressed by fixed uids, so a second push finds everything in place and changes
nothing. Objects Grafana loaded from provisioning files are read-only through the API and are left alone.

Grafana never returns secrets, so a changed ClickHouse password alone is not detected; the password is
sent whenever the datasource is created or updated.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from veil_collector.grafana.assets import Assets

PUSH_MESSAGE = "veil grafana push"
# Fields Grafana adds to a stored dashboard that are not part of its content.
_VOLATILE_DASHBOARD_KEYS = ("id", "version")


class PluginMissing(RuntimeError):
    """Grafana lacks the datasource's plugin: a datasource of that type would be created but never work."""


class Action(str, enum.Enum):
    """What a push does to one object."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    PROVISIONED = "provisioned"  # loaded from files by Grafana; the API cannot change it


@dataclass(frozen=True)
class Change:
    """One object's planned (or applied) action.

    Attributes:
        kind: ``datasource``, ``folder`` or ``dashboard``.
        uid: the object's uid.
        title: its name or title.
        action: what push does to it.
        reason: why an update is needed (which fields differ).
    """

    kind: str
    uid: str
    title: str
    action: Action
    reason: str = ""


def _get_or_none(fetch: Callable[[], Any]) -> Any:
    try:
        return fetch()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def _differing(desired: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if key in desired and desired[key] != current.get(key)]


def _plan_datasource(api: GrafanaApi, assets: Assets) -> Change:
    desired = assets.datasource
    uid, name = desired["uid"], desired["name"]
    current = _get_or_none(lambda: api.datasource.get_datasource_by_uid(uid))
    if current is None:
        return Change("datasource", uid, name, Action.CREATE)
    if current.get("readOnly"):
        return Change("datasource", uid, name, Action.PROVISIONED)
    differing = _differing(desired, current, ("name", "type", "access", "url", "isDefault"))
    current_json = current.get("jsonData") or {}
    differing += [
        f"jsonData.{key}"
        for key, value in desired.get("jsonData", {}).items()
        if current_json.get(key) != value
    ]
    secure_set = current.get("secureJsonFields") or {}
    differing += [
        f"secureJsonData.{key}" for key in desired.get("secureJsonData", {}) if not secure_set.get(key)
    ]
    if differing:
        return Change("datasource", uid, name, Action.UPDATE, ", ".join(differing))
    return Change("datasource", uid, name, Action.UNCHANGED)


def _plan_folder(api: GrafanaApi, assets: Assets) -> Change:
    uid, title = assets.folder_uid, assets.folder_title
    current = _get_or_none(lambda: api.folder.get_folder(uid))
    if current is None:
        return Change("folder", uid, title, Action.CREATE)
    if current.get("title") != title:
        return Change("folder", uid, title, Action.UPDATE, "title")
    return Change("folder", uid, title, Action.UNCHANGED)


def _content(dashboard: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in dashboard.items() if key not in _VOLATILE_DASHBOARD_KEYS}


def _plan_dashboard(api: GrafanaApi, assets: Assets, dashboard: dict[str, Any]) -> Change:
    uid, title = dashboard["uid"], dashboard.get("title", dashboard["uid"])
    current = _get_or_none(lambda: api.dashboard.get_dashboard(uid))
    if current is None:
        return Change("dashboard", uid, title, Action.CREATE)
    meta = current.get("meta") or {}
    if meta.get("provisioned"):
        return Change("dashboard", uid, title, Action.PROVISIONED)
    reasons = []
    if meta.get("folderUid") != assets.folder_uid:
        reasons.append("folder")
    if _content(current.get("dashboard") or {}) != _content(dashboard):
        reasons.append("content")
    if reasons:
        return Change("dashboard", uid, title, Action.UPDATE, ", ".join(reasons))
    return Change("dashboard", uid, title, Action.UNCHANGED)


def _check_plugin(api: GrafanaApi, plugin_id: str) -> None:
    if _get_or_none(lambda: api.client.GET(f"/plugins/{plugin_id}/settings")) is None:
        raise PluginMissing(
            f"Grafana has no {plugin_id} plugin; install it first (grafana cli plugins install {plugin_id}, "
            f"or GF_PLUGINS_PREINSTALL_SYNC={plugin_id} in Grafana's environment)"
        )


def plan(api: GrafanaApi, assets: Assets) -> list[Change]:
    """What ``push`` would do, in the order it does it; only reads from Grafana.

    Raises:
        PluginMissing: Grafana does not have the datasource's plugin installed.
    """
    _check_plugin(api, assets.datasource["type"])
    changes = [_plan_datasource(api, assets), _plan_folder(api, assets)]
    changes += [_plan_dashboard(api, assets, dashboard) for dashboard in assets.dashboards]
    return changes


def _apply(api: GrafanaApi, assets: Assets, change: Change) -> None:
    if change.action not in (Action.CREATE, Action.UPDATE):
        return
    create = change.action is Action.CREATE
    if change.kind == "datasource":
        if create:
            api.datasource.create_datasource(assets.datasource)
        else:
            api.datasource.update_datasource_by_uid(change.uid, assets.datasource)
    elif change.kind == "folder":
        if create:
            api.folder.create_folder(change.title, uid=change.uid)
        else:
            api.folder.update_folder(change.uid, title=change.title, overwrite=True)
    else:
        (dashboard,) = [d for d in assets.dashboards if d["uid"] == change.uid]
        api.dashboard.update_dashboard(
            {
                # No id: Grafana matches the fixed uid, and overwrite replaces whatever version it holds.
                "dashboard": {**_content(dashboard), "id": None},
                "folderUid": assets.folder_uid,
                "overwrite": True,
                "message": PUSH_MESSAGE,
            }
        )


def push(api: GrafanaApi, assets: Assets, *, dry_run: bool = False) -> list[Change]:
    """Create or update every object that differs; with ``dry_run`` only report what would change.

    Returns:
        The plan: one :class:`Change` per object, applied unless ``dry_run``.

    Raises:
        PluginMissing: Grafana does not have the datasource's plugin installed.
        grafana_client.client.GrafanaException: Grafana refused a request (bad token, bad input, ...).
    """
    changes = plan(api, assets)
    if not dry_run:
        for change in changes:
            _apply(api, assets, change)
    return changes
