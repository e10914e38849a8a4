"""The ``veil`` command line: run the collector, migrate the schema, manage projects, run the demo.

Options fall back to the same ``VEIL_*`` environment variables as :class:`~veil_collector.config.Settings`
(an option left out is not passed, so the variable or the setting's default applies). Expected failures
(bad settings, an unreachable ClickHouse, a bad price file) end with one red line and exit status 1;
only a bug shows a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.syntax import Syntax

from veil_collector.alert.cli import app as alerts_app
from veil_collector.config import Settings
from veil_collector.grafana.cli import app as grafana_app
from veil_collector.store.client import Store, StoreUnavailable, is_embedded, redact_dsn

app = typer.Typer(
    name="veil",
    help="Veil: LLM observability and guardrails. Run the collector, manage its schema and projects, "
    "or try everything with [bold]veil demo[/].",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
projects_app = typer.Typer(help="Projects and their API keys.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(grafana_app, name="grafana")
app.add_typer(alerts_app, name="alerts")

console = Console()
err_console = Console(stderr=True)

DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        help="ClickHouse to use: [bold]chdb:///folder[/] (embedded) or "
        "[bold]http(s)://user:pass@host:8123[/]. Default: embedded, in .veil/clickhouse "
        "(env VEIL_CLICKHOUSE_DSN).",
        show_default=False,
    ),
]


def _fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=1)


def _settings(**options: Any) -> Settings:
    """Settings from the options that were given, the environment and the defaults, or a clear exit."""
    try:
        return Settings(**{name: value for name, value in options.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        _fail(f"invalid settings: {problems}")


def _open_store(settings: Settings) -> Store:
    try:
        return Store(settings.clickhouse_dsn, database=settings.database)
    except (StoreUnavailable, ValueError, OSError) as exc:
        hint = ""
        if is_embedded(settings.clickhouse_dsn):
            # The usual cause: a running collector holds the folder (one process per embedded engine).
            hint = (
                "\nEmbedded ClickHouse can be open in one process only: if a collector is running on this "
                "folder, stop it first, or (for projects) use --url with the collector's admin token."
            )
        _fail(f"cannot open ClickHouse at {redact_dsn(settings.clickhouse_dsn)}: {exc}{hint}")


@app.command()
def collector(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on. Default: 127.0.0.1 (env VEIL_HOST).", show_default=False),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port for OTLP/HTTP and the API. Default: 4318 (env VEIL_PORT).", show_default=False
        ),
    ] = None,
    dsn: DsnOption = None,
    spool_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the durable ingest spool. Default: .veil/spool (env VEIL_SPOOL_DIR).",
            show_default=False,
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Accept requests without an API key, all into one default project. Local use only: "
            "anyone who can reach the port can write and read every trace.",
        ),
    ] = False,
    receiver_processes: Annotated[
        int | None,
        typer.Option(
            help="Worker processes that decode and PII-scrub requests beside the server process. "
            "Default: the number of usable cores when there are several, else 0 "
            "(env VEIL_RECEIVER_PROCESSES).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the collector: OTLP/HTTP ingest on /v1/traces, the query API on /api, docs on /docs."""
    from veil_collector import server

    if receiver_processes is None and "VEIL_RECEIVER_PROCESSES" not in os.environ:
        # A served collector spreads decode and the pattern scrub over the cores (about a third less CPU
        # in the server process per span, bench/collector_ingest.py); one core gains nothing from workers.
        cores = len(os.sched_getaffinity(0))
        receiver_processes = cores if cores > 1 else 0
    settings = _settings(
        host=host,
        port=port,
        clickhouse_dsn=dsn,
        spool_dir=spool_dir,
        no_auth=True if no_auth else None,
        receiver_processes=receiver_processes,
    )
    if settings.no_auth:
        err_console.print(
            Panel(
                "[bold]Authentication is OFF.[/] Every request is accepted without an API key and lands in "
                "the default project; anyone who can reach "
                f"[bold]{settings.host}:{settings.port}[/] can send and read all traces.\n"
                "Create a project with [bold]veil projects create NAME[/] and run without --no-auth "
                "for anything but local use.",
                title="[bold red]WARNING: --no-auth[/]",
                border_style="red",
            )
        )
    console.print(
        f"Veil collector on [bold]http://{settings.host}:{settings.port}[/] "
        f"(ClickHouse: {redact_dsn(settings.clickhouse_dsn)}, spool: {settings.spool_path})",
        highlight=False,
    )
    server.serve(settings)


@app.command()
def migrate(
    dsn: DsnOption = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            help="Render the schema for a ClickHouse cluster: ON CLUSTER NAME, Replicated engines and "
            "Distributed tables; the applied versions are recorded in a table every server replicates.",
            show_default=False,
        ),
    ] = None,
    print_sql: Annotated[
        bool,
        typer.Option(
            "--print", help="Print the SQL instead of running it (no ClickHouse connection is made)."
        ),
    ] = False,
    ttl_days: Annotated[
        int | None,
        typer.Option(
            help="Days rows are kept (every table's TTL). Default: 30 (env VEIL_TTL_DAYS).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create or upgrade the ClickHouse schema (the collector also does this when it starts)."""
    from veil_collector.store.migrate import (
        MigrationError,
        apply_migrations,
        load_migrations,
        pending_migrations,
    )

    settings = _settings(clickhouse_dsn=dsn, ttl_days=ttl_days)
    migrations = load_migrations()
    try:
        # Rendered before connecting, so that a bad cluster name fails without touching ClickHouse.
        rendered = {m.version: m.statements(ttl_days=settings.ttl_days, cluster=cluster) for m in migrations}
    except ValueError as exc:
        _fail(str(exc))

    if print_sql:
        sql = "\n\n".join(
            f"-- {m.version:04d}_{m.name}\n" + ";\n\n".join(rendered[m.version]) + ";" for m in migrations
        )
        console.print(Syntax(sql, "sql", background_color="default"), soft_wrap=True)
        return

    store = _open_store(settings)
    try:
        pending = pending_migrations(store, cluster=cluster)
        if not pending:
            console.print(f"[green]Schema is up to date[/] ({len(migrations)} migrations applied).")
            return
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("Migrating", total=len(pending))
            apply_migrations(
                store,
                pending,
                ttl_days=settings.ttl_days,
                cluster=cluster,
                on_migration=lambda _: progress.advance(task),
            )
        where = f" on cluster [bold]{cluster}[/]" if cluster else ""
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        console.print(f"[green]Applied {len(pending)} migration(s){where}:[/] {names}")
    except (StoreUnavailable, ClickHouseError, MigrationError) as exc:
        _fail(f"migration failed: {exc}")
    finally:
        store.close()


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="A name for the project, e.g. the application it observes.")],
    dsn: DsnOption = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="Create the project through a running collector at this URL (POST /api/projects) instead "
            "of opening ClickHouse here: the way to go while a collector holds embedded ClickHouse.",
            show_default=False,
        ),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="VEIL_ADMIN_TOKEN",
            help="With --url: the collector's admin token (its VEIL_ADMIN_TOKEN).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a project and print its API key. The key is shown once; only its hash is stored."""
    if url is not None:
        project_id, api_key = _create_project_over_http(url, name, admin_token)
    else:
        project_id, api_key = _create_project_in_store(name, dsn)
    console.print(
        Panel(
            f"Project [bold]{name.strip()}[/] ([dim]{project_id}[/])\n\n"
            f"API key: [bold green]{api_key}[/]\n\n"
            "Store it now: it is shown only this once. Send it as "
            "[bold]Authorization: Bearer <key>[/] (the SDK's [bold]veil.init(api_key=...)[/]).",
            title="New project",
            border_style="green",
        ),
        highlight=False,
    )


def _create_project_in_store(name: str, dsn: str | None) -> tuple[str, str]:
    from veil_collector.auth import create_project
    from veil_collector.store.migrate import migrate as apply_migrations

    settings = _settings(clickhouse_dsn=dsn)
    store = _open_store(settings)
    try:
        apply_migrations(store, ttl_days=settings.ttl_days)
        return create_project(store, name)
    except (StoreUnavailable, ClickHouseError, ValueError) as exc:
        _fail(str(exc))
    finally:
        store.close()


def _create_project_over_http(url: str, name: str, admin_token: str | None) -> tuple[str, str]:
    if not admin_token:
        _fail("--url needs the collector's admin token: pass --admin-token or set VEIL_ADMIN_TOKEN")
    endpoint = url.rstrip("/") + "/api/projects"
    try:
        response = httpx.post(
            endpoint, json={"name": name}, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the collector at {endpoint}: {exc}")
    if response.status_code != 201:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        _fail(f"the collector refused (HTTP {response.status_code}): {detail}")
    body = response.json()
    return body["project_id"], body["api_key"]


@app.command()
def demo(
    port: Annotated[
        int | None,
        typer.Option(help="Port for the demo collector. Default: a free port.", show_default=False),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Keep the demo's ClickHouse data and spool in this folder. Default: a temporary folder, "
            "removed at the end.",
            show_default=False,
        ),
    ] = None,
    serve: Annotated[
        bool | None,
        typer.Option(
            "--serve/--no-serve",
            help="Keep the collector running after the summary so you can open the URLs (Ctrl-C stops it). "
            "Default: yes when run from a terminal.",
            show_default=False,
        ),
    ] = None,
    rounds: Annotated[
        int, typer.Option(min=1, max=100, help="How many times the demo app runs its scenarios.")
    ] = 3,
    timeout: Annotated[
        float, typer.Option(min=5, help="Seconds to wait for the collector to start and the data to arrive.")
    ] = 180.0,
) -> None:
    """Start a collector on embedded ClickHouse, run a simulated LLM app against it, and show what it saw.

    The demo app needs no network: an agent with tool calls, chat calls to several fake models, a streamed
    reply and an error, with some prompts containing PII and some hostile language.
    """
    from veil_collector.demo.runner import DemoError, run_demo

    if serve is None:
        serve = console.is_terminal
    try:
        run_demo(console=console, port=port, data_dir=data_dir, serve=serve, rounds=rounds, timeout_s=timeout)
    except DemoError as exc:
        _fail(str(exc))


def main() -> None:
    """Console-script entry point (``veil``)."""
    app()
