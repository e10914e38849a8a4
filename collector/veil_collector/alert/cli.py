"""``veil alerts ...``: check and list rules, send a test notification, manage the outbox.

Mounted by the main CLI as ``veil alerts``. Works without a running collector: rules come from the rules
file and from the rule database in ``data_dir`` (SQLite, safe to read beside a running collector).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from veil_collector.alert import outbox
from veil_collector.alert.notification import iso
from veil_collector.alert.probe import send_test
from veil_collector.alert.rules import DEFAULT_PROJECT, Rule, RulesFileError, load_rules_file
from veil_collector.alert.rulestore import RuleNotFound, RuleStore
from veil_collector.alert.sqlite import connect
from veil_collector.config import Settings

app = typer.Typer(help="Alert rules and their notifications.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

RulesFileOption = Annotated[
    Path | None, typer.Option("--rules-file", help="YAML rules file (default: VEIL_ALERT_RULES_FILE)")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="collector data folder (default: VEIL_DATA_DIR)")
]
ProjectOption = Annotated[str, typer.Option("--project", help="project of the rule")]


def _sources(rules_file: Path | None, data_dir: Path | None) -> tuple[Path | None, Path]:
    """The rules file and data folder: options first, then the collector's settings (``VEIL_*``).

    Raises:
        ValueError: the environment holds an invalid setting (pydantic names it).
    """
    if rules_file is not None and data_dir is not None:
        return rules_file, data_dir
    settings = Settings()
    return rules_file or settings.alert_rules_file, data_dir or settings.data_dir


def _all_rules(rules_file: Path | None, data_dir: Path) -> list[Rule]:
    from_file = load_rules_file(rules_file) if rules_file is not None else []
    keys = {(r.project, r.id) for r in from_file}
    stored = [r for r in RuleStore(data_dir).list_rules() if (r.project, r.id) not in keys]
    return from_file + stored


@app.command("validate")
def validate(path: Annotated[Path, typer.Argument(help="the YAML rules file to check")]) -> None:
    """Check a rules file; exit status 1 and the reasons when it is invalid."""
    try:
        rules = load_rules_file(path)
    except RulesFileError as exc:
        errors.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from exc
    console.print(f"{path}: {len(rules)} valid rule(s)")


@app.command("list")
def list_rules(rules_file: RulesFileOption = None, data_dir: DataDirOption = None) -> None:
    """List the rules of every project (from the rules file and the API's rule database)."""
    try:
        rules = _all_rules(*_sources(rules_file, data_dir))
    except (RulesFileError, ValueError) as exc:
        errors.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    table = Table("project", "id", "name", "kind", "severity", "destinations", "source", "enabled")
    for rule in rules:
        destinations = ", ".join(f"{d.name} ({d.type})" for d in rule.destinations)
        kind = f"{rule.kind}: {rule.condition.type}"
        table.add_row(
            rule.project,
            rule.id,
            rule.name,
            kind,
            rule.severity,
            destinations,
            rule.source,
            str(rule.enabled),
        )
    console.print(table)


@app.command("test")
def test(
    rule_id: Annotated[str, typer.Argument(metavar="RULE", help="the rule's id")],
    project: ProjectOption = DEFAULT_PROJECT,
    rules_file: RulesFileOption = None,
    data_dir: DataDirOption = None,
    timeout: Annotated[float, typer.Option(help="seconds per destination")] = 15.0,
) -> None:
    """Send a test notification through RULE's destinations, once each; exit status 1 if one fails."""
    try:
        file, folder = _sources(rules_file, data_dir)
        rules = {(r.project, r.id): r for r in _all_rules(file, folder)}
        rule = rules.get((project, rule_id))
        if rule is None:
            raise RuleNotFound(f"no alert rule {rule_id!r} in project {project!r}")
    except (RulesFileError, RuleNotFound, ValueError) as exc:
        errors.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    failed = False
    for result in send_test(rule, timeout=timeout):
        ok = result.outcome == "delivered"
        failed |= not ok
        status = f"HTTP {result.status}" if result.status else "no response"
        line = f"{result.destination} ({result.destination_type}): {status}, {result.latency_ms:.0f} ms"
        if ok:
            console.print(f"[green]sent[/green] {line}", highlight=False)
        else:
            console.print(f"[red]failed[/red] {line}: {result.error}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("disabled")
def disabled(data_dir: DataDirOption = None) -> None:
    """List destinations switched off because they answered 410 Gone."""
    conn = _outbox_connection(data_dir)
    table = Table()
    table.add_column("key", no_wrap=True)
    table.add_column("url", overflow="fold")
    table.add_column("disabled at")
    table.add_column("reason")
    for row in outbox.disabled_destinations(conn):
        table.add_row(
            str(row["destination_key"]), str(row["url"]), iso(float(row["disabled_at"])), str(row["reason"])
        )
    console.print(table)


@app.command("enable")
def enable(
    key: Annotated[str, typer.Argument(help="the destination key that `veil alerts disabled` shows")],
    data_dir: DataDirOption = None,
) -> None:
    """Switch a disabled destination back on for new notifications."""
    if not outbox.enable(_outbox_connection(data_dir), key):
        errors.print(f"[red]no disabled destination with key {key!r}[/red]", highlight=False)
        raise typer.Exit(1)
    console.print(f"destination {key} enabled")


@app.command("replay")
def replay(
    notification: Annotated[
        str | None, typer.Option("--id", help="only this notification id (default: every one)")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Send dead-lettered, failed and disabled-destination notifications again (same webhook-id).

    Rows for a destination that is still disabled are skipped again; `veil alerts enable` it first.
    """
    count = outbox.replay(_outbox_connection(data_dir), notification_id=notification)
    console.print(f"{count} notification deliveries queued again")


def _outbox_connection(data_dir: Path | None) -> sqlite3.Connection:
    try:
        folder = data_dir or Settings().data_dir
    except ValueError as exc:
        errors.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    return connect(folder)
