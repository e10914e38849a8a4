"""The dashboard JSON and provisioning files are what Grafana imports: structure, ids, layout, datasource,
variables, and that the committed files are exactly what ``dashboards/build.py`` generates."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_expand import _get_macro_args

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "veil-clickhouse"}
EXPECTED = {"overview", "safety", "privacy", "guardrails", "alerts", "traces"}
FILTER_VARIABLES = ["project", "service", "model", "environment"]
# Grafana's variable syntaxes: $name, ${name}, ${name:format}, [[name]].
REFERENCE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)")
# Names that look like variables but are not: plugin macros and Grafana built-ins.
BUILTINS = re.compile(r"^__")
FORMAT_BY_PANEL = {"timeseries": 0, "stat": 1, "table": 1, "barchart": 1, "traces": 3}


def _load() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((DASHBOARDS / "json").glob("*.json"))}


BOARDS = _load()


def _references(text: str) -> set[str]:
    names = {next(g for g in m.groups() if g) for m in REFERENCE.finditer(text)}
    return {n for n in names if not BUILTINS.match(n)}


def test_the_six_dashboards_exist_with_unique_uids() -> None:
    assert set(BOARDS) == EXPECTED
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(set(uids)) == len(uids) and all(u.startswith("veil-") for u in uids)
    for board in BOARDS.values():
        assert "id" not in board, "a fixed id would collide across Grafana instances"
        assert isinstance(board["schemaVersion"], int) and board["title"] and board["panels"]
        assert board["tags"] == ["veil"]


def test_committed_files_are_what_the_generator_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("veil_dashboards_build", DASHBOARDS / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations through sys.modules, so the module must be registered.
    monkeypatch.setitem(sys.modules, spec.name, build)
    spec.loader.exec_module(build)
    for relative, text in build.build().items():
        assert (ROOT / relative).read_text() == text, f"{relative} is stale: run python dashboards/build.py"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panel_ids_are_unique_and_the_grid_has_no_overlap(name: str) -> None:
    panels = BOARDS[name]["panels"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_target_uses_the_veil_datasource_and_a_matching_format(name: str) -> None:
    for panel in BOARDS[name]["panels"]:
        assert panel["datasource"] == DATASOURCE
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
            assert target["editorType"] == "sql"
            assert target["format"] == FORMAT_BY_PANEL[panel["type"]], panel["title"]
            sql = target["rawSql"]
            assert "ProjectId = ${project:singlequote}" in sql, (
                f"{panel['title']} is not scoped to the project"
            )
            assert "$__timeFilter(Timestamp)" in sql or panel["type"] == "traces", panel["title"]
    for variable in BOARDS[name]["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_variables_are_defined_before_use(name: str) -> None:
    variables = BOARDS[name]["templating"]["list"]
    names = [v["name"] for v in variables]
    assert names[:4] == FILTER_VARIABLES and len(set(names)) == len(names)
    for i, variable in enumerate(variables):
        used = _references(variable.get("query", "") if variable["type"] == "query" else "")
        assert used <= set(names[:i]), f"{variable['name']} uses {used - set(names[:i])} before definition"
    for panel in BOARDS[name]["panels"]:
        texts = [panel["title"], *(t["rawSql"] for t in panel["targets"])]
        texts += [json.dumps(panel["fieldConfig"])]
        used = set().union(*(_references(t) for t in texts))
        assert used <= set(names), f"{panel['title']} uses undefined {used - set(names)}"
        for target in panel["targets"]:
            assert (
                _conditional_variables(target["rawSql"]) == {"service", "model", "environment"}
                or panel["type"] == "traces"
            )


def _conditional_variables(sql: str) -> set[str]:
    """The filter variables the query's ``$__conditionalAll`` calls test; each call must parse as two args."""
    found = set()
    for match in re.finditer(re.escape("$__conditionalAll("), sql):
        args = _get_macro_args(sql, match.end() - 1)
        assert len(args) == 2, f"$__conditionalAll must take (condition, $variable): {args}"
        assert re.fullmatch(r"\s*\$\w+\s*", args[1]), args[1]
        found.add(args[1].strip().lstrip("$"))
    return found - {"search"}


def test_filter_variables_are_multi_value_with_all() -> None:
    for board in BOARDS.values():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["project"]["multi"] is False and variables["project"]["includeAll"] is False
        for name in FILTER_VARIABLES[1:]:
            assert variables[name]["multi"] is True and variables[name]["includeAll"] is True
            assert variables[name]["current"] == {"text": ["All"], "value": ["$__all"]}


def test_trace_links_open_the_traces_dashboard() -> None:
    links = {
        (name, panel["title"]): prop["value"][0]["url"]
        for name, board in BOARDS.items()
        for panel in board["panels"]
        for override in panel["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "links"
    }
    assert set(links) == {
        ("overview", "Top sessions"),
        ("safety", "Most toxic responses"),
        ("privacy", "Recent leaks"),
        ("guardrails", "Recent blocks"),
        ("traces", "Traces"),
    }
    traces_uid = BOARDS["traces"]["uid"]
    for url in links.values():
        assert url.startswith(f"/d/{traces_uid}/") and "var-trace_id=${__value.raw}" in url


def test_datasource_provisioning() -> None:
    (path,) = (DASHBOARDS / "provisioning" / "datasources").glob("*.yaml")
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == 1
    (source,) = document["datasources"]
    assert {k: source[k] for k in ("uid", "type")} == DATASOURCE
    traces = source["jsonData"]["traces"]
    assert traces["otelEnabled"] is True and traces["defaultTable"] == "otel_traces"
    assert traces["durationUnit"] == "nanoseconds" and traces["traceTimestampTableSuffix"] == "_trace_id_ts"
    assert source["secureJsonData"]["password"] == "${CLICKHOUSE_PASSWORD}"


def test_dashboard_provisioning_points_at_the_json_folder() -> None:
    (path,) = (DASHBOARDS / "provisioning" / "dashboards").glob("*.yaml")
    (provider,) = yaml.safe_load(path.read_text())["providers"]
    assert provider["type"] == "file" and provider["folderUid"] == "veil"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/veil"
