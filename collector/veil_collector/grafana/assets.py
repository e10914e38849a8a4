"""Load what ``veil grafana push`` uploads from the provisioning files Grafana itself reads.

``dashboards/provisioning/datasources/*.yaml`` gives the datasource (with ``${NAME}`` values filled in
the way Grafana fills them from its environment), ``dashboards/provisioning/dashboards/*.yaml`` the
folder, and ``dashboards/json/*.json`` the dashboards.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DASHBOARDS_DIR_ENV = "VEIL_DASHBOARDS_DIR"

# Grafana's provisioning syntax: $NAME or ${NAME}.
_ENV_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
# The keys of a provisioned datasource that Grafana's HTTP API accepts as well.
_API_DATASOURCE_KEYS = ("name", "uid", "type", "access", "url", "isDefault", "jsonData", "secureJsonData")


@dataclass(frozen=True)
class Assets:
    """Everything one push uploads.

    Attributes:
        datasource: the body of ``POST /api/datasources``.
        folder_uid: the uid of the folder the dashboards live in.
        folder_title: its title.
        dashboards: the dashboard models, each with a fixed ``uid``.
    """

    datasource: dict[str, Any]
    folder_uid: str
    folder_title: str
    dashboards: tuple[dict[str, Any], ...]


def default_dashboards_dir() -> Path:
    """``$VEIL_DASHBOARDS_DIR``, else the ``dashboards/`` folder of the source checkout this runs from."""
    configured = os.environ.get(DASHBOARDS_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "dashboards"


def expand_env(text: str, values: Mapping[str, str]) -> str:
    """Replace ``$NAME`` and ``${NAME}`` like Grafana's provisioning does.

    Raises:
        ValueError: a referenced name has no value (Grafana would silently use an empty string).
    """
    missing: list[str] = []

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            missing.append(name)
            return ""
        return values[name]

    expanded = _ENV_REFERENCE.sub(lookup, text)
    if missing:
        raise ValueError(
            f"no value for {', '.join(sorted(set(missing)))} in the datasource provisioning file"
        )
    return expanded


def _expand_tree(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return expand_env(node, values)
    if isinstance(node, dict):
        return {key: _expand_tree(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand_tree(value, values) for value in node]
    return node


def _single_yaml(folder: Path, key: str) -> dict[str, Any]:
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if len(files) != 1:
        raise ValueError(f"expected one provisioning file in {folder}, found {len(files)}")
    document = yaml.safe_load(files[0].read_text(encoding="utf-8"))
    entries = document.get(key) if isinstance(document, dict) else None
    if not entries or len(entries) != 1:
        raise ValueError(f"{files[0]} must define exactly one entry under {key!r}")
    return entries[0]


def load_assets(directory: Path, values: Mapping[str, str]) -> Assets:
    """Read the datasource, folder and dashboards under ``directory`` (a ``dashboards/`` folder).

    Args:
        directory: the folder holding ``provisioning/`` and ``json/``.
        values: the values of the ``${NAME}`` references in the datasource file.

    Raises:
        ValueError: a file is missing or malformed, or a referenced value is missing.
    """
    if not (directory / "provisioning").is_dir() or not (directory / "json").is_dir():
        raise ValueError(
            f"{directory} is not a Veil dashboards folder (no provisioning/ and json/); "
            f"pass --dashboards or set {DASHBOARDS_DIR_ENV}"
        )
    datasource_folder = directory / "provisioning" / "datasources"
    raw = _single_yaml(datasource_folder, "datasources")
    # Expanded after parsing, value by value, so a value (a password with a '#') cannot change the structure.
    datasource = _expand_tree(raw, values)
    body = {key: datasource[key] for key in _API_DATASOURCE_KEYS if key in datasource}

    provider = _single_yaml(directory / "provisioning" / "dashboards", "providers")
    folder_uid, folder_title = provider.get("folderUid"), provider.get("folder")
    if not folder_uid or not folder_title:
        raise ValueError("the dashboard provider must set folder and folderUid")

    dashboards = []
    for path in sorted((directory / "json").glob("*.json")):
        try:
            model = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not model.get("uid"):
            raise ValueError(f"{path} has no uid; a fixed uid is what makes pushes idempotent")
        dashboards.append(model)
    if not dashboards:
        raise ValueError(f"no dashboards in {directory / 'json'}")
    return Assets(body, folder_uid, folder_title, tuple(dashboards))
