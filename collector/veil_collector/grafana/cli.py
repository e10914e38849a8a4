"""``veil grafana``: a Typer sub-app (the main CLI mounts it as ``veil grafana``).

``veil grafana push --url URL --token TOKEN [--dry-run]`` uploads the datasource, the Veil folder and
every dashboard; the ClickHouse connection Grafana should use comes from options or the same
``CLICKHOUSE_*`` environment variables the provisioning file reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import niquests
import typer
from grafana_client import GrafanaApi, TokenAuth
from grafana_client.client import GrafanaException
from rich.console import Console
from rich.table import Table

from veil_collector.grafana.assets import DASHBOARDS_DIR_ENV, default_dashboards_dir, load_assets
from veil_collector.grafana.push import Action, Change, PluginMissing, push

app = typer.Typer(
    name="grafana",
    help="Provision Grafana with Veil's ClickHouse datasource and dashboards.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

_STYLE = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.UNCHANGED: "dim",
    Action.PROVISIONED: "cyan",
}


@app.callback()
def grafana() -> None:
    """Provision Grafana with Veil's ClickHouse datasource and dashboards."""
    # A callback keeps ``push`` a subcommand (``veil grafana push``) even while it is the only one.


def connect(url: str, token: str, timeout: float) -> GrafanaApi:
    """A Grafana API client for ``url`` (any path prefix, e.g. ``https://host/grafana``) with a token."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(f"expected http(s)://host[:port][/path], got {url!r}", param_hint="--url")
    # grafana-client appends "api" to the path prefix directly, so a prefix needs its trailing slash.
    prefix = parts.path.strip("/")
    return GrafanaApi(
        TokenAuth(token),
        host=parts.hostname,
        port=parts.port,
        url_path_prefix=f"{prefix}/" if prefix else "",
        protocol=parts.scheme,
        timeout=timeout,
    )


def _report(changes: list[Change], *, dry_run: bool) -> None:
    table = Table(title="Grafana changes (dry run: nothing was changed)" if dry_run else "Grafana changes")
    for column in ("kind", "uid", "title", "action", "reason"):
        table.add_column(column)
    for change in changes:
        action = change.action.value
        if dry_run and change.action in (Action.CREATE, Action.UPDATE):
            action = f"would {action}"
        table.add_row(
            change.kind, change.uid, change.title, f"[{_STYLE[change.action]}]{action}[/]", change.reason
        )
    console.print(table)


@app.command("push")
def push_command(
    url: Annotated[str, typer.Option(help="Grafana's base URL.", envvar="GRAFANA_URL")],
    token: Annotated[
        str, typer.Option(help="A service account token (Editor or Admin).", envvar="GRAFANA_TOKEN")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; change nothing.")
    ] = False,
    clickhouse_host: Annotated[
        str, typer.Option(help="ClickHouse host as Grafana reaches it.", envvar="CLICKHOUSE_HOST")
    ] = "clickhouse",
    clickhouse_user: Annotated[
        str, typer.Option(help="ClickHouse user for Grafana (read-only).", envvar="CLICKHOUSE_USER")
    ] = "grafana",
    clickhouse_password: Annotated[
        str, typer.Option(help="That user's password.", envvar="CLICKHOUSE_PASSWORD")
    ] = "",
    clickhouse_database: Annotated[
        str, typer.Option(help="The database Veil's tables live in.", envvar="CLICKHOUSE_DATABASE")
    ] = "veil",
    dashboards: Annotated[
        Path | None,
        typer.Option(
            help=f"The dashboards/ folder (default: ${DASHBOARDS_DIR_ENV}, else the source checkout's)."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each Grafana request.")] = 10.0,
) -> None:
    """Create or update the ClickHouse datasource, the Veil folder and every dashboard, idempotently."""
    values = {
        "CLICKHOUSE_HOST": clickhouse_host,
        "CLICKHOUSE_USER": clickhouse_user,
        "CLICKHOUSE_PASSWORD": clickhouse_password,
        "CLICKHOUSE_DATABASE": clickhouse_database,
    }
    try:
        assets = load_assets(dashboards or default_dashboards_dir(), values)
    except ValueError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    api = connect(url, token, timeout)
    try:
        changes = push(api, assets, dry_run=dry_run)
    except PluginMissing as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    except GrafanaException as exc:
        err_console.print(f"[red]Grafana refused the request:[/] {exc}")
        raise typer.Exit(1) from exc
    except niquests.exceptions.RequestException as exc:
        err_console.print(f"[red]cannot reach Grafana at {url}:[/] {exc}")
        raise typer.Exit(1) from exc
    _report(changes, dry_run=dry_run)
