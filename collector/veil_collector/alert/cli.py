"""``veil alerts ...``: check and list rules, send a test notification, manage the outbox.

Mounted by the main CLI as ``veil alerts``. Works without a running collector: rules come from the rules
file and from the API's rules in ClickHouse (``--dsn``, read only when needed: ``test`` of a rule from the
file opens no database); the outbox commands use the SQLite database in ``data_dir``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from clickhouse_connect.driver.exceptions import ClickHouseError
from rich.console import Console
from rich.table import Table

from veil_collector.alert import outbox
from veil_collector.alert.notification import iso
from veil_collector.alert.probe import send_test
from veil_collector.alert.rules import DEFAULT_PROJECT, Rule, RulesFileError, load_rules_file
from veil_collector.alert.rulestore import RuleNotFound, RuleStore
from veil_collector.alert.sqlite import connect
from veil_collector.config import Settings
from veil_collector.store import Store, StoreUnavailable
from veil_collector.store.client import redact_dsn

app = typer.Typer(help="Alert rules and their notifications.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

RulesFileOption = Annotated[
    Path | None, typer.Option("--rules-file", help="YAML rules file (default: VEIL_ALERT_RULES_FILE)")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="collector data folder (default: VEIL_DATA_DIR)")
]
DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        help="ClickHouse holding the API's rules (default: VEIL_CLICKHOUSE_DSN, or embedded in .veil)",
    ),
]
ProjectOption = Annotated[str, typer.Option("--project", help="project of the rule")]


def _settings(rules_file: Path | None, dsn: str | None) -> Settings:
    """The collector's settings (``VEIL_*``) with the options given here in place of theirs.

    Raises:
        ValueError: an option or the environment holds an invalid setting (pydantic names it).
    """
    options = {"alert_rules_file": rules_file, "clickhouse_dsn": dsn}
    return Settings(**{name: value for name, value in options.items() if value is not None})


def _file_rules(settings: Settings) -> list[Rule]:
    return load_rules_file(settings.alert_rules_file) if settings.alert_rules_file is not None else []


def _stored_rules(settings: Settings) -> list[Rule]:
    """The rules in ClickHouse (the API's, and the file's as the collectors last synced them).

    Raises:
        ValueError: ClickHouse cannot be opened or read (the message says where, and why).
    """
    try:
        store = Store(settings.clickhouse_dsn, database=settings.database)
    except (StoreUnavailable, ValueError, OSError) as exc:
        raise ValueError(
            f"cannot open ClickHouse at {redact_dsn(settings.clickhouse_dsn)}: {exc} (embedded ClickHouse "
            "can be open in one process only: stop a collector running on that folder, or pass --dsn)"
        ) from exc
    try:
        return RuleStore(store).list_rules()
    except ClickHouseError as exc:  # e.g. a database the collector has not migrated yet
        raise ValueError(f"cannot read the alert rules from ClickHouse: {exc}") from exc
    finally:
        store.close()


def _merge(from_file: list[Rule], stored: list[Rule]) -> list[Rule]:
    """The file's rules, then the stored rules the file does not name (the file wins, as at a start)."""
    keys = {(r.project, r.id) for r in from_file}
    return from_file + [r for r in stored if (r.project, r.id) not in keys]


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
def list_rules(rules_file: RulesFileOption = None, dsn: DsnOption = None) -> None:
    """List the rules of every project (from the rules file and the API's rules in ClickHouse)."""
    try:
        settings = _settings(rules_file, dsn)
        rules = _merge(_file_rules(settings), _stored_rules(settings))
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
    dsn: DsnOption = None,
    timeout: Annotated[float, typer.Option(help="seconds per destination")] = 15.0,
) -> None:
    """Send a test notification through RULE's destinations, once each; exit status 1 if one fails."""
    try:
        settings = _settings(rules_file, dsn)
        rule = _find(_file_rules(settings), project, rule_id)
        if rule is None:
            rule = _find(_stored_rules(settings), project, rule_id)
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


def _find(rules: list[Rule], project: str, rule_id: str) -> Rule | None:
    return next((r for r in rules if (r.project, r.id) == (project, rule_id)), None)


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
