"""``veil grafana push`` against a local HTTP server implementing the Grafana API endpoints it calls.

No Grafana can run in this environment (no container engine, no Grafana binary), so the server below
implements the datasource, folder and dashboard endpoints with Grafana's status codes and response
shapes, keeps their state, and records every request; the tests assert the exact calls made.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from veil_collector.grafana.cli import app

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"
TOKEN = "glsa_test_token"
DASHBOARD_UIDS = sorted(json.loads(p.read_text())["uid"] for p in (DASHBOARDS_DIR / "json").glob("*.json"))


@dataclass
class FakeGrafana:
    """State and request log of the fake Grafana."""

    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugins: set[str] = field(default_factory=lambda: {"grafana-clickhouse-datasource"})
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    url: str = ""

    def calls(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _ in self.requests]

    def writes(self) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] != "GET"]

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "plugins"] and parts[3:] == ["settings"] and method == "GET":
            if parts[2] not in self.plugins:
                return 404, {"message": "Plugin not found, no installed plugin with that id"}
            return 200, {"id": parts[2], "type": "datasource", "enabled": True}
        if parts[:3] == ["api", "datasources", "uid"] and len(parts) == 4:
            uid = parts[3]
            if uid not in self.datasources:
                return 404, {"message": "Data source not found"}
            if method == "GET":
                return 200, self._datasource_view(uid)
            if method == "PUT":
                self.datasources[uid] = {**body, "id": self.datasources[uid]["id"]}
                return 200, {"message": "Datasource updated", "datasource": self._datasource_view(uid)}
        if parts == ["api", "datasources"] and method == "POST":
            if body["uid"] in self.datasources:
                return 409, {"message": "data source with the same uid already exists"}
            self.datasources[body["uid"]] = {**body, "id": len(self.datasources) + 1}
            return 200, {"message": "Datasource added", "datasource": self._datasource_view(body["uid"])}
        if parts[:2] == ["api", "folders"]:
            if method == "POST" and len(parts) == 2:
                if body["uid"] in self.folders:
                    return 409, {"message": "a folder with the same uid already exists"}
                self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "version": 1}
                return 200, self.folders[body["uid"]]
            uid = parts[2]
            if uid not in self.folders:
                return 404, {"message": "folder not found"}
            if method == "GET":
                return 200, self.folders[uid]
            if method == "PUT":
                folder = self.folders[uid]
                folder.update(title=body["title"], version=folder["version"] + 1)
                return 200, folder
        if parts[:3] == ["api", "dashboards", "uid"] and method == "GET":
            stored = self.dashboards.get(parts[3])
            if stored is None:
                return 404, {"message": "Dashboard not found"}
            return 200, {"dashboard": stored["dashboard"], "meta": stored["meta"]}
        if parts == ["api", "dashboards", "db"] and method == "POST":
            model = dict(body["dashboard"])
            previous = self.dashboards.get(model["uid"])
            if previous is not None and not body.get("overwrite"):
                return 412, {"status": "version-mismatch", "message": "The dashboard has been changed"}
            version = previous["dashboard"]["version"] + 1 if previous else 1
            model.update(
                id=previous["dashboard"]["id"] if previous else len(self.dashboards) + 1, version=version
            )
            meta = {"folderUid": body.get("folderUid", ""), "provisioned": False}
            self.dashboards[model["uid"]] = {"dashboard": model, "meta": meta}
            return 200, {"id": model["id"], "uid": model["uid"], "status": "success", "version": version}
        return 404, {"message": f"no route {method} {path}"}

    def _datasource_view(self, uid: str) -> dict[str, Any]:
        # Grafana never returns secrets: only which secure fields are set.
        stored = dict(self.datasources[uid])
        secure = stored.pop("secureJsonData", {}) or {}
        return {
            **stored,
            "readOnly": stored.get("readOnly", False),
            "secureJsonFields": dict.fromkeys(secure, True),
        }


def _handler(grafana: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            grafana.requests.append((self.command, self.path, body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, payload = 401, {"message": "Unauthorized"}
            else:
                status, payload = grafana.handle(self.command, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    state = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def _push(grafana: FakeGrafana, *extra: str, token: str = TOKEN) -> Any:
    args = ["push", "--url", grafana.url, "--token", token, "--clickhouse-password", "s3cret", *extra]
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


def _expected_reads() -> list[tuple[str, str]]:
    return [
        ("GET", "/api/plugins/grafana-clickhouse-datasource/settings"),
        ("GET", "/api/datasources/uid/veil-clickhouse"),
        ("GET", "/api/folders/veil"),
        *[("GET", f"/api/dashboards/uid/{uid}") for uid in _file_order_uids()],
    ]


def _file_order_uids() -> list[str]:
    return [json.loads(p.read_text())["uid"] for p in sorted((DASHBOARDS_DIR / "json").glob("*.json"))]


def test_first_push_creates_datasource_folder_and_every_dashboard(grafana: FakeGrafana) -> None:
    result = _push(grafana)
    assert result.exit_code == 0, result.output

    expected_writes = [
        ("POST", "/api/datasources"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(DASHBOARD_UIDS),
    ]
    assert grafana.calls() == _expected_reads() + expected_writes

    provisioned = yaml.safe_load((DASHBOARDS_DIR / "provisioning/datasources/veil.yaml").read_text())
    source = provisioned["datasources"][0]
    (_, _, datasource), (_, _, folder), *dashboard_posts = grafana.writes()
    assert datasource["uid"] == "veil-clickhouse" and datasource["type"] == "grafana-clickhouse-datasource"
    assert datasource["jsonData"] == {
        **source["jsonData"],
        "host": "clickhouse",
        "username": "grafana",
        "defaultDatabase": "veil",
        "traces": {**source["jsonData"]["traces"], "defaultDatabase": "veil"},
    }
    assert datasource["jsonData"]["traces"]["otelEnabled"] is True
    assert datasource["secureJsonData"] == {"password": "s3cret"}
    assert "editable" not in datasource  # provisioning-only key
    assert folder == {"title": "Veil", "uid": "veil"}
    assert sorted(body["dashboard"]["uid"] for _, _, body in dashboard_posts) == DASHBOARD_UIDS
    for _, _, body in dashboard_posts:
        assert body["folderUid"] == "veil" and body["overwrite"] is True and body["dashboard"]["id"] is None
    assert sorted(grafana.dashboards) == DASHBOARD_UIDS


def test_second_push_changes_nothing(grafana: FakeGrafana) -> None:
    assert _push(grafana).exit_code == 0
    grafana.requests.clear()

    result = _push(grafana)
    assert result.exit_code == 0, result.output
    assert grafana.calls() == _expected_reads()
    assert "unchanged" in result.output and "create" not in result.output
    assert all(d["dashboard"]["version"] == 1 for d in grafana.dashboards.values())


def test_push_updates_only_what_drifted(grafana: FakeGrafana) -> None:
    assert _push(grafana).exit_code == 0
    edited = grafana.dashboards["veil-safety"]["dashboard"]
    edited["title"] = "edited in the UI"
    grafana.folders["veil"]["title"] = "Renamed"
    grafana.requests.clear()

    result = _push(grafana)
    assert result.exit_code == 0, result.output
    assert [(m, p) for m, p, _ in grafana.writes()] == [
        ("PUT", "/api/folders/veil"),
        ("POST", "/api/dashboards/db"),
    ]
    (_, _, folder_body), (_, _, dashboard_body) = grafana.writes()
    assert folder_body == {"title": "Veil", "overwrite": True}
    assert dashboard_body["dashboard"]["uid"] == "veil-safety"
    assert grafana.dashboards["veil-safety"]["dashboard"]["title"] == "Veil / Safety"


def test_push_updates_a_datasource_whose_settings_differ(grafana: FakeGrafana) -> None:
    assert _push(grafana).exit_code == 0
    grafana.requests.clear()

    result = _push(grafana, "--clickhouse-host", "clickhouse.internal")
    assert result.exit_code == 0, result.output
    ((method, path, body),) = grafana.writes()
    assert (method, path) == ("PUT", "/api/datasources/uid/veil-clickhouse")
    assert body["jsonData"]["host"] == "clickhouse.internal"
    assert "jsonData.host" in result.output


def test_dry_run_changes_nothing(grafana: FakeGrafana) -> None:
    result = _push(grafana, "--dry-run")
    assert result.exit_code == 0, result.output
    assert grafana.calls() == _expected_reads()
    assert not grafana.datasources and not grafana.folders and not grafana.dashboards
    assert "would create" in result.output and "dry run" in result.output


def test_provisioned_objects_are_left_alone(grafana: FakeGrafana) -> None:
    grafana.datasources["veil-clickhouse"] = {
        "uid": "veil-clickhouse", "name": "Veil ClickHouse", "id": 1, "readOnly": True, "jsonData": {}
    }  # fmt: skip
    result = _push(grafana)
    assert result.exit_code == 0, result.output
    assert not [w for w in grafana.writes() if "datasources" in w[1]]
    assert "provisioned" in result.output


def test_bad_token_fails_with_a_clear_message(grafana: FakeGrafana) -> None:
    result = _push(grafana, token="wrong")
    assert result.exit_code == 1
    assert "Grafana refused the request" in result.output
    assert not grafana.writes()


def test_missing_dashboards_folder_is_a_usage_error(grafana: FakeGrafana, tmp_path: Path) -> None:
    result = _push(grafana, "--dashboards", str(tmp_path))
    assert result.exit_code == 2
    assert "is not a Veil dashboards folder" in result.output
    assert not grafana.requests


def test_a_grafana_without_the_clickhouse_plugin_is_refused_before_any_change(grafana: FakeGrafana) -> None:
    grafana.plugins.clear()
    result = _push(grafana)
    assert result.exit_code == 1
    assert "no grafana-clickhouse-datasource plugin" in result.output
    assert grafana.calls() == [("GET", "/api/plugins/grafana-clickhouse-datasource/settings")]
