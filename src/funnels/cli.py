"""The `funnels` command: serve, worker, import, query, replay, validate, keys, migrate, demo."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from funnels import discovery
from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import QueryValidationError, parse_funnel_query
from funnels.auth import create_key, list_keys, revoke_key
from funnels.automation.runtime import Automation
from funnels.clock import SystemClock
from funnels.config import ConfigInvalid, load_config
from funnels.services import DataDirBusy, Services
from funnels.settings import private_files, resolve_data_dir
from funnels.store.schema import SchemaTooNew, SchemaUnrecognised
from funnels.store.state import StateFileDamaged, StateStore
from funnels.types import SCOPES

app = typer.Typer(help="funnels: a self-hosted funnel engine.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (else $FUNNELS_DATA_DIR, else ./.funnels).")
]


@app.callback()
def _private_files() -> None:
    """Every command that may own a data directory creates its files readable by its user only."""
    private_files()


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


StateUrl = Annotated[
    str | None,
    typer.Option(
        "--state-url",
        envvar="FUNNELS_STATE_URL",
        help="Keep the state (keys, event log, automation) in this PostgreSQL database, e.g. "
        "postgresql://funnels@db.internal/funnels (else $FUNNELS_STATE_URL; else state.sqlite3 in the data "
        "directory).",
    ),
]

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config", envvar="FUNNELS_CONFIG", help="Automation config, JSON or YAML (else $FUNNELS_CONFIG)."
    ),
]


def _print_config_errors(invalid: ConfigInvalid, file: Path) -> None:
    for error in invalid.errors:
        err.print(str(error), markup=False, highlight=False)
    err.print(f"{len(invalid.errors)} problem(s) in {file}", markup=False, highlight=False)


def _open(data_dir: Path | None, config: Path | None = None, state_url: str | None = None) -> Services:
    try:
        return Services.open(resolve_data_dir(data_dir), config_path=config, state_url=state_url)
    except (DataDirBusy, StateFileDamaged, SchemaTooNew, SchemaUnrecognised, ValueError) as error:
        _fail(escape(str(error)))
    except ConfigInvalid as invalid:
        assert config is not None
        _print_config_errors(invalid, config)
        _fail(f"not starting: the config {config} is invalid")


def _reload_on_sighup(automation: Automation) -> Callable[[], None]:
    """`kill -HUP` re-reads the config; a bad file is reported and the running config stays. Returns the
    reload function."""

    def reload() -> None:
        try:
            config = automation.reload()
        except ConfigInvalid as invalid:
            assert automation.path is not None
            _print_config_errors(invalid, automation.path)
            err.print("config reload failed; the previous config stays in effect", highlight=False)
            return
        err.print(f"config reloaded: {len(config.funnels)} funnels", highlight=False)

    # The handler runs on the main thread between bytecodes: hand the file I/O to a thread.
    signal.signal(signal.SIGHUP, lambda _signum, _frame: threading.Thread(target=reload).start())
    return reload


def _state(
    data_dir: Path | None, state_url: str | None, check: bool = True, migrate: bool = True
) -> StateStore:
    """The state store (`--state-url`, else the data directory's file), its schema brought up to date
    (unless not `migrate`)."""
    try:
        return StateStore(
            state_url or resolve_data_dir(data_dir) / "state.sqlite3", check=check, migrate=migrate
        )
    except (StateFileDamaged, SchemaTooNew, SchemaUnrecognised, ValueError) as error:
        _fail(escape(str(error)))


PublicUrl = Annotated[
    str | None,
    typer.Option(
        "--public-url",
        envvar="FUNNELS_PUBLIC_URL",
        help="Where clients reach the server, e.g. https://funnels.example.com (else $FUNNELS_PUBLIC_URL): "
        "errors' doc_url start with it. Without it they are relative (/errors#code), never built from the "
        "request's Host header.",
    ),
]


def _public_url(value: str | None) -> str | None:
    """The public URL, checked: http(s)://host[:port][/path], no query or fragment; None when unset."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        _fail(f"--public-url {value!r} must be an http:// or https:// URL with a host (no query or fragment)")
    return value.rstrip("/")


CorsOrigins = Annotated[
    str,
    typer.Option(
        "--cors-origins",
        envvar="FUNNELS_CORS_ORIGINS",
        help="Origins whose pages may call the Segment routes /v1/* from the browser (analytics.js), comma "
        "separated, e.g. https://www.example.com,https://app.example.com; * (the default) for any. Every "
        "other route stays same-origin.",
    ),
]


def _cors_origins(value: str) -> tuple[str, ...]:
    """The CORS allow-list, checked; an invalid one stops the command (exit 1)."""
    from funnels.api.cors import parse_origins

    try:
        return parse_origins(value)
    except ValueError as error:
        _fail(f"--cors-origins: {escape(str(error))}")


class Delivery(StrEnum):
    """Where `funnels serve` delivers actions."""

    process = "process"  # a `funnels worker` child it supervises (the default)
    thread = "thread"  # a thread in the server process
    off = "off"  # not at all: run `funnels worker` yourself


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (default $PORT or 8000).")] = int(
        os.environ.get("PORT", "8000")
    ),
    config: ConfigFile = None,
    delivery: Annotated[
        Delivery,
        typer.Option(
            help="Deliver actions from a child process the server supervises (process), "
            "a thread of the server (thread), or not at all (off: run `funnels worker`)."
        ),
    ] = Delivery.process,
    public_url: PublicUrl = None,
    state_url: StateUrl = None,
    cors_origins: CorsOrigins = "*",
) -> None:
    """Serve the API and the dashboard; with --config, run the automation and deliver its actions too."""
    from funnels.api.server import run
    from funnels.app import create_app
    from funnels.automation.process import WorkerProcess

    public_url = _public_url(public_url)
    origins = _cors_origins(cors_origins)
    svc = _open(data_dir, config, state_url)
    if config is not None:
        _reload_on_sighup(svc.automation)
        if delivery is Delivery.process:
            automation = svc.automation
            svc.worker_process = WorkerProcess(
                svc.data_dir,
                lambda: automation.plan.config.raw if automation.plan else {},
                release=svc.release_jobs,
                state_url=state_url,
            )
            automation.on_reload.append(svc.worker_process.reload)
    err.print(f"funnels: data in {svc.data_dir}; serving on http://{host}:{port}/", highlight=False)
    try:
        app = create_app(
            svc,
            run_worker=delivery is Delivery.thread,
            public_url=public_url,
            cors_origins=origins,
            local_credential=discovery.new_credential(),  # for the CLI beside us: `funnels query`, …
        )
        started = run(app, host, port, public_url, data_dir=svc.data_dir)
    finally:
        svc.close()
    if not started:
        raise typer.Exit(3)  # uvicorn said why (the port is taken, say); 3 is uvicorn's own exit code


@app.command("worker")
def worker_(
    config: Annotated[Path, typer.Option("--config", envvar="FUNNELS_CONFIG", help="The automation config.")],
    data_dir: DataDir = None,
    state_url: StateUrl = None,
    concurrency: Annotated[int, typer.Option(help="Sends in flight at once.")] = 16,
    wake_fd: Annotated[
        int | None, typer.Option(hidden=True, help="Supervised by `funnels serve`: its wake-up pipe.")
    ] = None,
    lease_owner: Annotated[
        str | None,
        typer.Option(hidden=True, help="Supervised by `funnels serve`: the name its job leases carry."),
    ] = None,
) -> None:
    """Deliver due actions from the data directory's outbox (alongside `funnels serve`, or several)."""
    from funnels.automation.worker import Worker

    state = _state(
        data_dir, state_url, check=wake_fd is None
    )  # `funnels serve` checked the file before starting us
    clock = SystemClock()
    try:
        automation = Automation(state, clock, config)
    except ConfigInvalid as invalid:
        _print_config_errors(invalid, config)
        _fail(f"not starting: the config {config} is invalid")
    reload = _reload_on_sighup(automation)
    runner = Worker(
        state,
        automation.delivery,
        clock,
        concurrency=concurrency,
        owner=lease_owner,
        allow=automation.network_allow,
    )
    err.print(f"funnels worker: delivering from {state.where} (Ctrl-C to stop)", highlight=False)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.set())
    if wake_fd is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, and the server stops us
        _follow_wake_pipe(wake_fd, runner.wake, reload, stopped)
    runner.start()
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runner.close()


def _follow_wake_pipe(
    fd: int, wake: Callable[[], None], reload: Callable[[], None], stopped: threading.Event
) -> None:
    """Messages from the server (`automation/process.py`): wake the worker, reload the config; stop when
    the server closes the pipe or dies."""
    from funnels.automation.process import RELOAD

    def follow() -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                stopped.set()
                return
            if RELOAD in data:
                reload()
            wake()

    threading.Thread(target=follow, name="funnels-wake", daemon=True).start()


@keys_app.command("create")
def keys_create(
    scope: Annotated[list[str], typer.Option("--scope", help=f"A scope: {', '.join(SCOPES)} (repeatable).")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    data_dir: DataDir = None,
    state_url: StateUrl = None,
) -> None:
    """Create an API key; prints only the key."""
    try:
        key = create_key(_state(data_dir, state_url), SystemClock(), scope, name)
    except ValueError as error:
        _fail(str(error), 2)
    typer.echo(key)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, state_url: StateUrl = None) -> None:
    """List API keys (ids and scopes; secrets are never stored)."""
    table = Table("id", "scopes", "name", "revoked")
    for key in list_keys(_state(data_dir, state_url)):
        table.add_row(key.id, " ".join(key.scopes), key.name, "yes" if key.revoked else "")
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, state_url: StateUrl = None) -> None:
    """Revoke a key by its id (the part after `fk_`, before the next `_`)."""
    if not revoke_key(_state(data_dir, state_url), SystemClock(), key_id):
        _fail(f"no active key with id {key_id}")


@app.command()
def migrate(data_dir: DataDir = None, state_url: StateUrl = None) -> None:
    """Bring the state store's schema up to date; prints the revision before and after. (Every command
    that opens the store does this too; this one does only that.)"""
    state = _state(data_dir, state_url, migrate=False)
    try:
        migration = state.migrate()
    except (SchemaTooNew, SchemaUnrecognised) as error:
        _fail(escape(str(error)))
    finally:
        state.close()
    if migration.stamped is not None:
        before = f"none recorded: written before migrations, recognised as {migration.stamped}"
    else:
        before = migration.before or "none: a new state store"
    typer.echo(f"schema revision before: {before}")
    typer.echo(f"schema revision after: {migration.after}")


TABLE_HEADERS = {
    "conversion_from_start": "conv. from start",
    "conversion_from_previous": "conv. from prev",
    "dropoff_from_previous": "drop-off",
    "dropped_off_users": "dropped",
    "median_seconds_from_previous": "median s from prev",
    "median_seconds_from_start": "median s from start",
}


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "–"
    if name.startswith(("conversion", "dropoff")):
        return f"{value * 100:.2f}%"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _print_table(response: dict[str, Any]) -> None:
    names = [column["name"] for column in response["meta"]]
    table = Table(*(TABLE_HEADERS.get(name, name) for name in names))
    for column, name in zip(table.columns, names, strict=True):
        column.overflow = "fold"
        column.justify = "left" if name in ("event", "breakdown") else "right"
    for row in response["data"]:
        table.add_row(*(_cell(name, row[name]) for name in names))
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped output: no folding


@app.command()
def query(
    date_from: Annotated[str, typer.Option("--date-from", help="YYYY-MM-DD")],
    date_to: Annotated[str, typer.Option("--date-to", help="YYYY-MM-DD")],
    steps: Annotated[str, typer.Option("--steps", help="JSON array of 2–10 step specs")],
    window_seconds: Annotated[int | None, typer.Option("--window-seconds")] = None,
    funnel_type: Annotated[str | None, typer.Option("--funnel-type", help="closed or open")] = None,
    breakdown: Annotated[str | None, typer.Option("--breakdown")] = None,
    breakdown_top_n: Annotated[int | None, typer.Option("--breakdown-top-n")] = None,
    identity: Annotated[
        str | None, typer.Option("--identity", help="stitched (default: users are persons) or raw")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="json (the API's body) or table")] = "table",
    data_dir: DataDir = None,
) -> None:
    """Run a funnel query on the data directory directly (the server must not be running on it)."""
    if output not in ("json", "table"):
        _fail("--format must be json or table", 2)
    params = {
        "date_from": date_from,
        "date_to": date_to,
        "steps": steps,
        "window_seconds": window_seconds,
        "funnel_type": funnel_type,
        "breakdown": breakdown,
        "breakdown_top_n": breakdown_top_n,
        "identity": identity,
    }
    try:
        parsed = parse_funnel_query({k: v for k, v in params.items() if v is not None})
    except QueryValidationError as error:
        _fail("; ".join(f"{path}: {message}" for path, message in error.details.items()), 2)
    svc = _open(data_dir)
    try:
        svc.shipper.flush()
        response = run_funnel(svc.events, parsed)
    finally:
        svc.close()
    if output == "json":
        sys.stdout.write(orjson.dumps(response).decode() + "\n")
    else:
        _print_table(response)


@app.command("import")
def import_(
    files: Annotated[
        list[Path], typer.Argument(help="NDJSON (.ndjson/.jsonl), CSV (.csv) or Parquet (.parquet) files")
    ],
    data_dir: DataDir = None,
) -> None:
    """Import historical events straight into the event store (fires no automation)."""
    from funnels.ingest.importer import import_files

    svc = _open(data_dir)
    try:
        report = import_files(svc.events, files, console=err)
    except ValueError as error:  # an unsupported, missing or unreadable file: nothing was written
        _fail(str(error))
    finally:
        svc.close()
    err.print(
        f"imported {report.imported:,} events, skipped {report.skipped:,} bad rows in {report.seconds:.1f}s",
        highlight=False,
    )
    if report.skipped:
        raise typer.Exit(1)


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="The config file (JSON or YAML).")]) -> None:
    """Check a config file: every problem is listed with its path; exit status 1 if there are any."""
    try:
        config = load_config(file)
    except ConfigInvalid as invalid:
        _print_config_errors(invalid, file)
        raise typer.Exit(1) from None
    steps = sum(len(funnel.steps) for funnel in config.funnels)
    typer.echo(f"{file}: ok ({len(config.models)} models, {len(config.funnels)} funnels, {steps} steps)")


@app.command()
def replay(
    events_file: Annotated[
        Path, typer.Argument(help="NDJSON (one identify or event a line) or a .json array, with timestamps.")
    ],
    config: Annotated[
        Path, typer.Option("--config", envvar="FUNNELS_CONFIG", help="The automation config to test.")
    ],
    date_from: Annotated[
        str | None, typer.Option("--from", help="Feed events from this ISO date or time (UTC if no zone).")
    ] = None,
    date_to: Annotated[
        str | None,
        typer.Option("--to", help="Feed events up to, and stop the clock at, this date (its end) or time."),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table, or json (one object a line)")] = "table",
) -> None:
    """Replay historical events through a config on a virtual clock: what would fire when; sends nothing."""
    from funnels.automation.replay import ReplayFileError, parse_moment, replay, rows_table

    if output not in ("json", "table"):
        _fail("--format must be json or table", 2)
    try:
        start_ms = None if date_from is None else parse_moment(date_from)
        end_ms = None if date_to is None else parse_moment(date_to, end_of_day=True)
    except ValueError as error:
        _fail(f"--from/--to: {error} (e.g. 2026-04-01 or 2026-04-01T09:30:00Z)", 2)
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        _fail("--from must not be after --to", 2)
    try:
        report = replay(events_file, config, start_ms, end_ms)
    except ReplayFileError as error:
        _fail(str(error), 2)
    except ConfigInvalid as invalid:
        _print_config_errors(invalid, config)
        _fail(f"not replaying: the config {config} is invalid", 2)
    for bad_line in report.errors[:100]:
        err.print(str(bad_line), markup=False, highlight=False)
    if len(report.errors) > 100:
        err.print(f"... and {len(report.errors) - 100:,} more bad lines (not shown)", highlight=False)
    for note in report.notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    if output == "json":
        sys.stdout.write("".join(orjson.dumps(row.as_dict()).decode() + "\n" for row in report.rows))
        err.print(report.summary(), highlight=False)
    else:
        Console(width=None if sys.stdout.isatty() else 200).print(rows_table(report))
        typer.echo(report.summary())
    if report.errors:
        err.print(f"skipped {len(report.errors):,} bad lines", highlight=False)
        raise typer.Exit(1)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port (default $PORT or 8000).")] = int(
        os.environ.get("PORT", "8000")
    ),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Demo data directory (recreated).")] = Path(
        ".funnels-demo"
    ),
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Set up only; do not serve.")] = False,
    public_url: PublicUrl = None,
) -> None:
    """Load the bundled sample dataset and the automation demo (a config, customers, deliveries in every
    status, all to 127.0.0.1) into a fresh data directory, create a key, and serve."""
    from funnels.demo import setup_demo
    from funnels.demo_automation import DemoSink

    result = setup_demo(data_dir)
    typer.echo(f"Sample data: {result.events:,} events from {result.users:,} users in {result.data_dir}")
    typer.echo(
        f"Automation: {result.config_path} (webhooks to the demo's sink on 127.0.0.1:{result.sink_port}, "
        "email to a closed local port)"
    )
    typer.echo(f"API key (all scopes): {result.key}")
    typer.echo(f"Dashboard: http://{host}:{port}/?{result.query_string}")
    if not no_serve:
        try:
            sink = DemoSink(result.sink_port)
        except OSError as error:  # taken meanwhile: those deliveries fail and are retried, nothing else
            err.print(f"funnels demo: the webhook sink could not start again ({error})", highlight=False)
            sink = None
        try:
            serve(
                data_dir=result.data_dir,
                host=host,
                port=port,
                config=result.config_path,
                public_url=public_url,
            )
        finally:
            if sink is not None:
                sink.close()


def main() -> None:  # pragma: no cover - console entry point
    app()
