"""The `funnels` command: serve, worker, import, query, saved, catalog, events, replay, validate, keys, migrate,
suppressions, demo."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from funnels import discovery, heap
from funnels.clock import SystemClock
from funnels.settings import (
    DEFAULT_QUERY_TIMEOUT_SECONDS,
    QUERY_TIMEOUT_ENV,
    private_files,
    query_limit,
    resolve_data_dir,
)
from funnels.types import SCOPES

# What a command needs is imported inside it: `funnels --help` or `funnels keys create` should not load every
# analysis, pyarrow, chDB and the HTTP client (the import cost 1.8 s of CPU up front: docs/benchmarks.md).
if TYPE_CHECKING:
    from funnels.analytics import saved as saved_funnels
    from funnels.automation.runtime import Automation
    from funnels.client import ServerClient
    from funnels.config import ConfigInvalid
    from funnels.ingest.importer import ImportReport
    from funnels.services import Services
    from funnels.store.events import EventStore
    from funnels.store.state import StateStore

app = typer.Typer(help="funnels: a self-hosted funnel engine.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
catalog_app = typer.Typer(
    help="What the event store has seen, for building a funnel (GET /v0/events/names, /properties, /values).",
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")
events_app = typer.Typer(
    help="The event store on a ClickHouse server or cluster: lay it out, move it there.", no_args_is_help=True
)
app.add_typer(events_app, name="events")
saved_app = typer.Typer(
    help="Saved funnels (GET /v0/saved_funnels): list, show, delete. `funnels query --saved NAME` runs one, "
    "`--save NAME` saves one.",
    no_args_is_help=True,
)
app.add_typer(saved_app, name="saved")
suppressions_app = typer.Typer(
    help="Opt-outs (what instances unsubscribed from): import them from another tool's export.",
    no_args_is_help=True,
)
app.add_typer(suppressions_app, name="suppressions")
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

EventsUrl = Annotated[
    str | None,
    typer.Option(
        "--events-url",
        envvar="FUNNELS_EVENTS_URL",
        help="Keep the events on this ClickHouse server, e.g. https://funnels:secret@ch.internal:8443/funnels "
        "(else $FUNNELS_EVENTS_URL; else the embedded store in the data directory).",
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


def _open(
    data_dir: Path | None,
    config: Path | None = None,
    state_url: str | None = None,
    events_url: str | None = None,
) -> Services:
    from funnels.config import ConfigInvalid
    from funnels.services import DataDirBusy, Services
    from funnels.store.events import EventStoreError
    from funnels.store.schema import SchemaTooNew, SchemaUnrecognised
    from funnels.store.state import StateFileDamaged

    try:
        return Services.open(
            resolve_data_dir(data_dir), config_path=config, state_url=state_url, events_url=events_url
        )
    except (
        DataDirBusy,
        StateFileDamaged,
        SchemaTooNew,
        SchemaUnrecognised,
        EventStoreError,
        ValueError,
    ) as error:
        _fail(escape(str(error)))
    except ConfigInvalid as invalid:
        assert config is not None
        _print_config_errors(invalid, config)
        _fail(f"not starting: the config {config} is invalid")


def _reload_on_sighup(automation: Automation) -> Callable[[], None]:
    """`kill -HUP` re-reads the config; a bad file is reported and the running config stays. Returns the
    reload function."""

    from funnels.config import ConfigInvalid

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
    from funnels.store.schema import SchemaTooNew, SchemaUnrecognised
    from funnels.store.state import StateFileDamaged, StateStore

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
        "errors' doc_url and emails' unsubscribe links (List-Unsubscribe, {{ unsubscribe_url }}) start with "
        "it. Without it doc_url are relative (/errors#code), never built from the request's Host header, and "
        "emails carry no unsubscribe link.",
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
    events_url: EventsUrl = None,
    cors_origins: CorsOrigins = "*",
    query_timeout: Annotated[
        float | None,
        typer.Option(
            "--query-timeout",
            envvar=QUERY_TIMEOUT_ENV,
            help=f"Stop each query of an analytics request after this many seconds (ClickHouse's "
            f"max_execution_time) and answer 503 naming the limit; 0 for no limit (else ${QUERY_TIMEOUT_ENV}, "
            f"else {DEFAULT_QUERY_TIMEOUT_SECONDS:g}).",
        ),
    ] = None,
) -> None:
    """Serve the API and the dashboard; with --config, run the automation and deliver its actions too."""
    from funnels.api.server import run
    from funnels.app import create_app
    from funnels.automation.process import WorkerProcess

    public_url = _public_url(public_url)
    origins = _cors_origins(cors_origins)
    try:
        limit = query_limit(query_timeout)
    except ValueError as error:
        _fail(escape(str(error)), 2)
    svc = _open(data_dir, config, state_url, events_url)
    svc.query_timeout_seconds = limit
    if config is not None:
        _reload_on_sighup(svc.automation)
        if delivery is Delivery.process:
            automation = svc.automation
            svc.worker_process = WorkerProcess(
                svc.data_dir,
                lambda: automation.plan.config.raw if automation.plan else {},
                release=svc.release_jobs,
                state_url=state_url,
                public_url=public_url,
            )
            automation.on_reload.append(svc.worker_process.reload)
    if delivery is not Delivery.off:
        _warn_without_links(svc.automation, public_url)
    err.print(f"funnels: data in {svc.data_dir}; serving on http://{host}:{port}/", highlight=False)
    try:
        app = create_app(
            svc,
            run_worker=delivery is Delivery.thread,
            public_url=public_url,
            cors_origins=origins,
            local_credential=discovery.new_credential(),  # for the CLI beside us: `funnels query`, …
        )
        heap.settle()  # everything is loaded: full collections skip it from here on (no 100+ ms pauses)
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
    public_url: PublicUrl = None,
) -> None:
    """Deliver due actions from the data directory's outbox (alongside `funnels serve`, or several)."""
    from funnels.automation.runtime import Automation
    from funnels.automation.worker import Worker
    from funnels.config import ConfigInvalid

    public_url = _public_url(public_url)

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
        public_url=public_url,
    )
    if wake_fd is None:  # `funnels serve` said it for its delivery process
        _warn_without_links(automation, public_url)
    err.print(f"funnels worker: delivering from {state.where} (Ctrl-C to stop)", highlight=False)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.set())
    if wake_fd is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, and the server stops us
        _follow_wake_pipe(wake_fd, runner.wake, reload, stopped)
    heap.settle()
    runner.start()
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runner.close()


def _warn_without_links(automation: Automation, public_url: str | None) -> None:
    """One line when emails will go out without a one-click unsubscribe link."""
    from funnels.automation.consent import needs_links

    plan = automation.plan
    if public_url is None and needs_links(plan.config if plan else None):
        err.print(
            "warning: no --public-url (FUNNELS_PUBLIC_URL): non-transactional emails go out without a "
            "one-click unsubscribe link (List-Unsubscribe) and {{ unsubscribe_url }} renders empty",
            markup=False,
            highlight=False,
        )


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
    from funnels.auth import create_key

    try:
        key = create_key(_state(data_dir, state_url), SystemClock(), scope, name)
    except ValueError as error:
        _fail(str(error), 2)
    typer.echo(key)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, state_url: StateUrl = None) -> None:
    """List API keys (ids and scopes; secrets are never stored)."""
    from rich.table import Table

    from funnels.auth import list_keys

    table = Table("id", "scopes", "name", "revoked")
    for key in list_keys(_state(data_dir, state_url)):
        table.add_row(key.id, " ".join(key.scopes), key.name, "yes" if key.revoked else "")
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, state_url: StateUrl = None) -> None:
    """Revoke a key by its id (the part after `fk_`, before the next `_`)."""
    from funnels.auth import revoke_key

    if not revoke_key(_state(data_dir, state_url), SystemClock(), key_id):
        _fail(f"no active key with id {key_id}")


@suppressions_app.command("import")
def suppressions_import(
    file: Annotated[Path, typer.Argument(help="A CSV file with a header row (docs/cli.md).")],
    model: Annotated[
        str | None, typer.Option(help="The model of rows without a `model` column (e.g. customer).")
    ] = None,
    topic: Annotated[
        str,
        typer.Option(
            help="What rows without a `topic` column unsubscribe from: email, sms, email:<topic>, …"
        ),
    ] = "email",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would change; write nothing.")
    ] = False,
    data_dir: DataDir = None,
    state_url: StateUrl = None,
) -> None:
    """Unsubscribe the instances a CSV file names (source `import`): by an id (`id`, `external_id`,
    `user_id` or `customer_id` column) or by the `email` property (`email` or `email address` column).
    Exit 1 when some rows were bad (the others are imported), 2 when the file cannot be read."""
    from funnels.automation.consent import SuppressionFileInvalid, import_suppressions, read_suppressions

    try:
        data = file.read_bytes()
    except OSError as error:
        _fail(f"cannot read {file}: {error.strerror or error}", 2)
    try:
        rows, bad = read_suppressions(data, model, topic)
    except SuppressionFileInvalid as error:
        _fail(f"{file}: {escape(str(error))}", 2)
    report = import_suppressions(_state(data_dir, state_url), rows, SystemClock().now_ms(), dry_run=dry_run)
    for line, problem in bad[:100]:
        err.print(f"{file}:{line}: {problem}", markup=False, highlight=False)
    if len(bad) > 100:
        err.print(f"... and {len(bad) - 100:,} more bad rows (not shown)", highlight=False)
    for line in report.unknown[:20]:
        err.print(f"{file}:{line}: no such instance", markup=False, highlight=False)
    if len(report.unknown) > 20:
        err.print(f"... and {len(report.unknown) - 20:,} more rows naming no instance", highlight=False)
    verb = "would import" if dry_run else "imported"
    typer.echo(
        f"{verb} {report.imported:,} rows ({report.opt_outs:,} opt-outs); already unsubscribed "
        f"{report.already:,}; unknown instance {len(report.unknown):,}; bad rows {len(bad):,}"
    )
    if bad:
        raise typer.Exit(1)


@app.command()
def migrate(data_dir: DataDir = None, state_url: StateUrl = None) -> None:
    """Bring the state store's schema up to date; prints the revision before and after. (Every command
    that opens the store does this too; this one does only that.)"""
    from funnels.store.schema import SchemaTooNew, SchemaUnrecognised

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


Answer = TypeVar("Answer")
Parsed = TypeVar("Parsed")


def _beside_server(data_dir: Path, call: Callable[[ServerClient], Answer]) -> Answer | None:
    """`call` on the server that holds the data directory, when one does (its `server.json`); None when
    none does, or the file was left by a server that is gone: the caller then opens the directory itself."""
    from funnels.client import ServerAbsent, ServerLost, ServerRefused, find_server

    server = find_server(data_dir)
    if server is None:
        return None
    err.print(
        f"funnels: {escape(str(data_dir))} is held by {server}; going through it",
        highlight=False,
        style="dim",
    )
    try:
        return call(server)
    except ServerAbsent as absent:
        err.print(
            f"funnels: {escape(str(absent))}; opening the directory itself", highlight=False, style="dim"
        )
        return None
    except ServerLost as error:
        _fail(escape(str(error)))
    except ServerRefused as error:
        if error.code == "INVALID_VALIDATION_REQUEST" and error.details:
            _fail(escape(_problems(error.details)), 2)
        _fail(escape(f"{server}: {error.message}"))
    finally:
        server.close()


def _problems(details: dict[str, Any]) -> str:
    return "; ".join(f"{path}: {message}" for path, message in details.items())


def _read(
    data_dir: Path | None,
    endpoint: str,
    params: dict[str, Any],
    parse: Callable[[dict[str, Any]], Parsed],
    run: Callable[[EventStore, Parsed], dict[str, Any]],
    events_url: str | None = None,
    state_url: str | None = None,
    models: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """An analytics endpoint's answer for these parameters (those not None): from the server that holds
    the data directory, else from the directory itself. Parameter errors stop here (exit status 2).
    `models`: the models `aggregate_by` may name on the directory itself (None: any; the server checks
    its own config's)."""
    from funnels.analytics.query import QueryValidationError

    given = {name: value for name, value in params.items() if value is not None}
    try:
        parsed = parse(given)
    except QueryValidationError as error:
        _fail(_problems(error.details), 2)
    resolved = resolve_data_dir(data_dir)
    answer = _beside_server(
        resolved, lambda server: server.get(endpoint, {k: str(v) for k, v in given.items()})
    )
    if answer is not None:
        return answer
    from funnels.store.events import QueryBudget, QueryTimeout

    try:
        limit = query_limit()
    except ValueError as error:
        _fail(escape(str(error)), 2)
    svc = _open(resolved, state_url=state_url, events_url=events_url)
    try:
        svc.shipper.flush()
        _load_groups(svc, getattr(getattr(parsed, "funnel", None), "aggregate_by", None), models)
        with svc.events.limited(QueryBudget(limit)):
            return run(svc.events, parsed)
    except QueryTimeout as error:
        _fail(
            f"the query ran longer than the limit of {error.limit_seconds:g} seconds and was stopped: narrow it "
            f"(a shorter date range, fewer breakdown values), or raise {QUERY_TIMEOUT_ENV} (0: no limit)"
        )
    finally:
        svc.close()


def _load_groups(svc: Services, model: str | None, models: tuple[str, ...] | None) -> None:
    """With `aggregate_by` on the data directory itself: the model checked against `--config`'s models
    when given (exit status 2), and its memberships brought to the event store."""
    if model is None:
        return
    from funnels.analytics.groups import aggregate_by_problem
    from funnels.store.groups import load_groups

    problem = aggregate_by_problem(model, models) if models is not None else None
    if problem is not None:
        _fail(f"aggregate_by: {problem}", 2)
    load_groups(svc.state, svc.events, model)


def _declared_models(config: Path | None) -> tuple[str, ...] | None:
    """The models `--config` declares (None without one); exit 1 when it is invalid."""
    if config is None:
        return None
    from funnels.config import ConfigInvalid, load_config

    try:
        return load_config(config).models
    except ConfigInvalid as invalid:
        _print_config_errors(invalid, config)
        _fail(f"the config {config} is invalid")


Format = Annotated[str, typer.Option("--format", help="json (the API's body) or table")]


def _check_format(output: str) -> None:
    if output not in ("json", "table"):
        _fail("--format must be json or table", 2)


def _saved_funnel(state: StateStore, name_or_id: str) -> saved_funnels.SavedFunnel:
    """The funnel saved under this name (or with this id); exit 1 when there is none."""
    from funnels.analytics import saved as saved_funnels

    try:
        return saved_funnels.find_by_name_or_id(state, name_or_id)
    except saved_funnels.SavedFunnelMissing as missing:
        _fail(escape(str(missing)))
    finally:
        state.close()


def _save_funnel(state: StateStore, name: str, params: dict[str, Any]) -> None:
    """Save the funnel's parameters under a new name (exit 2 when invalid, 1 on a conflict); says so on stderr."""
    from funnels.analytics import saved as saved_funnels
    from funnels.analytics.query import QueryValidationError

    parameters = {key: str(value) for key, value in params.items() if key in saved_funnels.PARAMETERS}
    try:
        funnel = saved_funnels.create(state, SystemClock(), name, parameters)
    except QueryValidationError as error:
        _fail(escape(_problems(error.details)), 2)
    except saved_funnels.SavedFunnelConflict as conflict:
        _fail(escape(str(conflict)))
    finally:
        state.close()
    err.print(f"saved as {escape(funnel.name)!r}: /funnels?saved={funnel.id}", highlight=False)


@app.command()
def query(
    date_from: Annotated[str | None, typer.Option("--date-from", help="YYYY-MM-DD")] = None,
    date_to: Annotated[str | None, typer.Option("--date-to", help="YYYY-MM-DD")] = None,
    steps: Annotated[str | None, typer.Option("--steps", help="JSON array of 2–10 step specs")] = None,
    window_seconds: Annotated[int | None, typer.Option("--window-seconds")] = None,
    funnel_type: Annotated[str | None, typer.Option("--funnel-type", help="closed, open or strict")] = None,
    breakdown: Annotated[
        str | None,
        typer.Option("--breakdown", help="A column (utm_source, …), properties.<key> or person.<key>"),
    ] = None,
    breakdown_top_n: Annotated[int | None, typer.Option("--breakdown-top-n")] = None,
    breakdown_attribution: Annotated[
        str | None,
        typer.Option("--breakdown-attribution", help="first_touch (default), last_touch or step:K"),
    ] = None,
    identity: Annotated[
        str | None, typer.Option("--identity", help="stitched (default: users are persons) or raw")
    ] = None,
    exclusions: Annotated[
        str | None,
        typer.Option(
            "--exclusions", help="Closed funnels: JSON array of {type, event, filters?, from_step, to_step}"
        ),
    ] = None,
    hold_constant: Annotated[
        str | None,
        typer.Option(
            "--hold-constant",
            help="Any funnel type: JSON array of properties.KEY or columns every step shares",
        ),
    ] = None,
    aggregate_by: Annotated[
        str | None,
        typer.Option(
            "--aggregate-by",
            help="A declared model (organization, …): count its instances instead of users (members' events)",
        ),
    ] = None,
    sample: Annotated[
        str | None,
        typer.Option(
            "--sample",
            help="A fraction of users (e.g. 0.1): answer from that deterministic sample, counts scaled, "
            "with 95% intervals (the funnel itself; not with --interval, --from-step/--to-step or --people)",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="FUNNELS_CONFIG",
            help="The config whose models --aggregate-by may name (on the data directory itself)",
        ),
    ] = None,
    interval: Annotated[
        str | None,
        typer.Option("--interval", help="day, week or month: conversion over time (GET /v0/funnel/trends)"),
    ] = None,
    from_step: Annotated[
        int | None,
        typer.Option("--from-step", help="With --to-step: time to convert (GET /v0/funnel/time_to_convert)"),
    ] = None,
    to_step: Annotated[int | None, typer.Option("--to-step", help="The step measured to (1-based)")] = None,
    bins: Annotated[
        str | None, typer.Option("--bins", help="With --to-step: auto (default) or 1–100 equal bins")
    ] = None,
    people: Annotated[
        bool, typer.Option("--people", help="The users behind a step (GET /v0/funnel/people)")
    ] = False,
    step: Annotated[int | None, typer.Option("--step", help="People: the step (1-based; default 1)")] = None,
    outcome: Annotated[
        str | None, typer.Option("--outcome", help="People: reached (default), converted or dropped")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="People: users per page (default 100)")] = None,
    cursor: Annotated[str | None, typer.Option("--cursor", help="People: the next page's cursor")] = None,
    breakdown_value: Annotated[
        str | None, typer.Option("--breakdown-value", help="People: only a breakdown row's users (its label)")
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="previous_period: also the same funnel over the days just before, and each row's change",
        ),
    ] = None,
    saved: Annotated[
        str | None,
        typer.Option(
            "--saved", help="Start from the funnel saved under this name (or id); options given override it"
        ),
    ] = None,
    save: Annotated[
        str | None,
        typer.Option("--save", help="Save the funnel's parameters under this new name, then run it"),
    ] = None,
    output: Annotated[
        str, typer.Option("--format", help="json (the API's body) or table; csv for --people")
    ] = "table",
    data_dir: DataDir = None,
    events_url: EventsUrl = None,
    state_url: StateUrl = None,
) -> None:
    """Run a funnel query on the data directory (through the server when one is running on it); with
    --interval its conversion over time, with --from-step/--to-step its time to convert, with --people
    (or --step, --outcome, --limit, --cursor) the users behind a step. --saved starts from a saved funnel,
    --save saves one (both in the state store, opened directly)."""
    from funnels.analytics.compare import parse_compared_query, run_compared
    from funnels.analytics.people import parse_people_query, people_csv, run_people
    from funnels.analytics.time_to_convert import parse_time_to_convert_query, run_time_to_convert
    from funnels.analytics.trends import parse_trends_query, run_trends
    from funnels.cli_tables import funnel_table, people_table, show, time_to_convert_table, trends_table

    listing = people or any(value is not None for value in (step, outcome, limit, cursor, breakdown_value))
    if not (listing and output == "csv"):
        _check_format(output)
    given: dict[str, Any] = {
        "date_from": date_from,
        "date_to": date_to,
        "steps": steps,
        "window_seconds": window_seconds,
        "funnel_type": funnel_type,
        "breakdown": breakdown,
        "breakdown_top_n": breakdown_top_n,
        "breakdown_attribution": breakdown_attribution,
        "identity": identity,
        "compare": compare,
        "exclusions": exclusions,
        "hold_constant": hold_constant,
        "aggregate_by": aggregate_by,
        "sample": sample,
    }
    measuring = from_step is not None or to_step is not None or bins is not None
    if sum((interval is not None, measuring, listing)) > 1:
        _fail(
            "--interval (trends), --from-step/--to-step/--bins (time to convert) and --people/--step/--outcome/"
            "--limit/--cursor/--breakdown-value (people) are separate queries",
            2,
        )
    if compare is not None and (interval is not None or measuring or listing):
        _fail(
            "--compare compares the funnel itself: not with --interval, --from-step/--to-step or --people", 2
        )
    models = _declared_models(config)
    base = _saved_funnel(_state(data_dir, state_url), saved).parameters if saved is not None else {}
    params: dict[str, Any] = base | {name: value for name, value in given.items() if value is not None}
    if save is not None:
        _save_funnel(_state(data_dir, state_url), save, params)
    if interval is not None or measuring or listing:
        params.pop("compare", None)  # a saved funnel's comparison is the funnel's alone
    if listing:
        answer = _read(
            data_dir,
            "/v0/funnel/people",
            params
            | {
                "step": step,
                "outcome": outcome,
                "limit": limit,
                "cursor": cursor,
                "breakdown_value": breakdown_value,
            },
            parse_people_query,
            run_people,
            events_url,
            state_url,
            models,
        )
        if output == "csv":
            sys.stdout.write(people_csv(answer, breakdown=bool(breakdown)))
            return
        show(answer, output, people_table)
        return
    if interval is not None:
        now_ms = SystemClock().now_ms()
        answer = _read(
            data_dir,
            "/v0/funnel/trends",
            params | {"interval": interval},
            parse_trends_query,
            lambda store, parsed: run_trends(store, parsed, now_ms),
            events_url,
            state_url,
            models,
        )
        show(answer, output, trends_table)
        return
    if measuring:
        answer = _read(
            data_dir,
            "/v0/funnel/time_to_convert",
            params | {"from_step": from_step, "to_step": to_step, "bins": bins},
            parse_time_to_convert_query,
            run_time_to_convert,
            events_url,
            state_url,
            models,
        )
        show(answer, output, time_to_convert_table)
        return
    answer = _read(
        data_dir, "/v0/funnel", params, parse_compared_query, run_compared, events_url, state_url, models
    )
    show(answer, output, funnel_table)


def _listed(funnel: saved_funnels.ListedFunnel | saved_funnels.SavedFunnel) -> dict[str, Any]:
    """A saved funnel as `GET /v0/saved_funnels` shows it (its link relative to the server)."""
    from funnels.automation.deliveries import iso

    return {
        "id": funnel.id,
        "name": funnel.name,
        "version": funnel.version,
        "created": iso(funnel.created_ms),
        "updated": iso(funnel.updated_ms),
        "link": f"/funnels?saved={funnel.id}",
    }


@saved_app.command("list")
def saved_list(output: Format = "table", data_dir: DataDir = None, state_url: StateUrl = None) -> None:
    """List the saved funnels by name (as GET /v0/saved_funnels)."""
    from funnels.analytics import saved as saved_funnels
    from funnels.cli_tables import saved_table, show

    _check_format(output)
    state = _state(data_dir, state_url)
    try:
        funnels = [_listed(funnel) for funnel in saved_funnels.list_saved(state)]
    finally:
        state.close()
    show({"data": funnels, "rows": len(funnels)}, output, saved_table)


@saved_app.command("show")
def saved_show(
    name: Annotated[str, typer.Argument(help="The saved funnel's name, or its id")],
    data_dir: DataDir = None,
    state_url: StateUrl = None,
) -> None:
    """Print a saved funnel with its /v0/funnel parameters, as JSON (as GET /v0/saved_funnels/{id})."""
    funnel = _saved_funnel(_state(data_dir, state_url), name)
    body = _listed(funnel) | {"parameters": funnel.parameters}
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")


@saved_app.command("delete")
def saved_delete(
    name: Annotated[str, typer.Argument(help="The saved funnel's name, or its id")],
    data_dir: DataDir = None,
    state_url: StateUrl = None,
) -> None:
    """Delete a saved funnel (its links stop working)."""
    from funnels.analytics import saved as saved_funnels

    state = _state(data_dir, state_url)
    try:
        funnel = saved_funnels.find_by_name_or_id(state, name)
        if not saved_funnels.delete(state, funnel.id):
            raise saved_funnels.SavedFunnelMissing(f"No saved funnel {funnel.id}.")
    except saved_funnels.SavedFunnelMissing as missing:
        _fail(escape(str(missing)))
    finally:
        state.close()
    typer.echo(f"deleted {funnel.name!r} ({funnel.id})")


DateFrom = Annotated[str | None, typer.Option("--date-from", help="YYYY-MM-DD (default: all time)")]
DateTo = Annotated[str | None, typer.Option("--date-to", help="YYYY-MM-DD (default: all time)")]
StepType = Annotated[str, typer.Option("--type", help="The step's type, as in /v0/funnel (event: any name)")]
StepEvent = Annotated[str, typer.Option("--event", help="The step's event, as in /v0/funnel")]
Limit = Annotated[int | None, typer.Option("--limit", help="Rows listed, 1–1000")]


@catalog_app.command("names")
def catalog_names(
    date_from: DateFrom = None,
    date_to: DateTo = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="Only this stored type (track, page, …)")
    ] = None,
    q: Annotated[str | None, typer.Option("--q", help="Only names containing this text (any case)")] = None,
    limit: Limit = None,
    output: Format = "table",
    data_dir: DataDir = None,
    events_url: EventsUrl = None,
) -> None:
    """The event names seen, per type, with counts and last seen time."""
    from funnels.analytics.catalog import parse_names_query, seen_names
    from funnels.cli_tables import names_table, show

    _check_format(output)
    params = {"date_from": date_from, "date_to": date_to, "type": type_, "q": q, "limit": limit}
    answer = _read(data_dir, "/v0/events/names", params, parse_names_query, seen_names, events_url)
    show(answer, output, names_table)


@catalog_app.command("properties")
def catalog_properties(
    type_: StepType,
    event: StepEvent,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    limit: Limit = None,
    output: Format = "table",
    data_dir: DataDir = None,
    events_url: EventsUrl = None,
) -> None:
    """The operands a step can filter on (standard columns, property keys), with their top values."""
    from funnels.analytics.catalog import parse_operands_query, seen_operands
    from funnels.cli_tables import operands_table, show

    _check_format(output)
    params = {"type": type_, "event": event, "date_from": date_from, "date_to": date_to, "limit": limit}
    answer = _read(data_dir, "/v0/events/properties", params, parse_operands_query, seen_operands, events_url)
    show(answer, output, operands_table)


@catalog_app.command("values")
def catalog_values(
    type_: StepType,
    event: StepEvent,
    operand: Annotated[str, typer.Option("--operand", help="A standard column or a property key")],
    q: Annotated[
        str | None, typer.Option("--q", help="Only values starting with this text (any case)")
    ] = None,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    limit: Limit = None,
    output: Format = "table",
    data_dir: DataDir = None,
    events_url: EventsUrl = None,
) -> None:
    """The values of one operand of a step, by count."""
    from funnels.analytics.catalog import parse_values_query, seen_values
    from funnels.cli_tables import show, values_table

    _check_format(output)
    params = {
        "type": type_,
        "event": event,
        "operand": operand,
        "q": q,
        "date_from": date_from,
        "date_to": date_to,
        "limit": limit,
    }
    answer = _read(data_dir, "/v0/events/values", params, parse_values_query, seen_values, events_url)
    show(answer, output, values_table)


def _import_through(server: ServerClient, files: list[Path]) -> ImportReport:
    """Each file sent to the server's `POST /v0/import` in turn, reported as a direct import reports it:
    bad rows (the first 100), a line per file when there are several."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from funnels.client import ServerAbsent, ServerLost
    from funnels.ingest.importer import MAX_PRINTED_ERRORS, ImportReport
    from funnels.types import RowError

    report, started = ImportReport(), time.perf_counter()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    with progress:
        for number, path in enumerate(files):
            task = progress.add_task(f"{path.name} → server", total=path.stat().st_size)
            try:
                body = server.upload(path, str(path), partial(progress.advance, task))
            except ServerAbsent as gone:
                if number == 0:
                    raise
                done = ", ".join(map(str, files[:number]))
                raise ServerLost(f"{gone}; {done} imported, the files after it not") from None
            for row in body["errors"][: max(0, MAX_PRINTED_ERRORS - report.skipped)]:
                bad = RowError(row["file"], row["line"], row["message"], row["unit"])
                progress.console.print(str(bad), markup=False, highlight=False, soft_wrap=True)
            report.imported += body["imported"]
            report.skipped += body["skipped"]
            if len(files) > 1:
                progress.console.print(
                    f"{path}: imported {body['imported']:,}, skipped {body['skipped']:,}",
                    markup=False,
                    highlight=False,
                )
    if report.skipped > MAX_PRINTED_ERRORS:
        err.print(
            f"... and {report.skipped - MAX_PRINTED_ERRORS:,} more bad rows (not shown)", highlight=False
        )
    report.seconds = time.perf_counter() - started
    return report


@app.command("import")
def import_(
    files: Annotated[
        list[Path], typer.Argument(help="NDJSON (.ndjson/.jsonl), CSV (.csv) or Parquet (.parquet) files")
    ],
    data_dir: DataDir = None,
    events_url: EventsUrl = None,
) -> None:
    """Import historical events straight into the event store (fires no automation); through the server
    when one is running on the data directory."""
    from funnels.ingest.importer import check_files, import_files

    try:
        check_files(files)  # before anything is written: an unsupported or missing file
    except ValueError as error:
        _fail(str(error))
    resolved = resolve_data_dir(data_dir)
    report = _beside_server(resolved, lambda server: _import_through(server, files))
    if report is None:
        svc = _open(resolved, events_url=events_url)
        try:
            report = import_files(svc.events, files, console=err)
        except ValueError as error:  # an unreadable file: nothing of it was written
            _fail(str(error))
        finally:
            svc.close()
    err.print(
        f"imported {report.imported:,} events, skipped {report.skipped:,} bad rows in {report.seconds:.1f}s",
        highlight=False,
    )
    if report.skipped:
        raise typer.Exit(1)


@events_app.command("copy")
def events_copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The ClickHouse server to copy to, as --events-url takes it, e.g. "
            "https://funnels:secret@ch.internal:8443/funnels",
        ),
    ],
    data_dir: DataDir = None,
    batch_rows: Annotated[
        int, typer.Option("--batch-rows", min=1, max=1_000_000, help="Events per insert.")
    ] = 100_000,
) -> None:
    """Copy the data directory's embedded event store to a ClickHouse server, then check the copy (counts
    and checksums per month, a funnel's answer). Run it again after an interruption: it resumes, and copies
    nothing twice. The directory must not be held by a running `funnels serve`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from funnels.client import find_server
    from funnels.ingest.copy import CopyError, SourceStore, copy_month, month_label, plan_copy, verify_copy
    from funnels.services import open_event_store
    from funnels.store.events import EventStoreError
    from funnels.store.server_events import redact

    password = unquote(urlsplit(to).password or "")

    def clean(message: object) -> str:  # no password in any line we print
        text = str(message)
        return escape(text.replace(password, "***") if password else text)

    resolved = resolve_data_dir(data_dir)
    events_dir = resolved / "events"
    if not events_dir.is_dir():
        _fail(f"no event store in {escape(str(resolved))} (no events/ directory)")
    server = find_server(resolved)
    if server is not None:
        server.close()
        _fail(
            f"{escape(str(resolved))} is held by {server}: stop it first (the copy reads the directory's "
            "event store itself; docs/deploy.md, Moving to a ClickHouse server)"
        )
    try:
        target = open_event_store(resolved, to)
    except (EventStoreError, ValueError) as error:
        _fail(clean(error))
    err.print(
        f"funnels: copying the events in {escape(str(events_dir))} to {clean(redact(to))}", highlight=False
    )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    try:
        with SourceStore(events_dir) as source:
            plan = plan_copy(source, target)
            left = sum(month.left for month in plan)
            done = sum(month.target for month in plan)
            if done:
                err.print(f"resuming: {done:,} events are on the target already", highlight=False)
            with progress:
                task = progress.add_task("events", total=left)
                copied = 0
                for month in plan:
                    progress.update(task, description=month_label(month.month))
                    copied += copy_month(source, target, month, batch_rows, partial(progress.advance, task))
            err.print(f"copied {copied:,} events; checking the copy", highlight=False)
            problems = verify_copy(source, target)
    except KeyboardInterrupt:
        _fail("interrupted: run the same command again to resume", 130)
    except (CopyError, EventStoreError) as error:
        _fail(clean(error) + " (run the same command again to resume)")
    finally:
        target.close()
    if problems:
        for problem in problems:
            err.print(clean(problem), highlight=False)
        _fail("the copy differs from the source")
    months = len(plan)
    typer.echo(f"the target holds every event of {months} month(s): counts, checksums and funnels agree")


@events_app.command("init")
def events_init(
    cluster: Annotated[
        str, typer.Option("--cluster", help="The cluster, as the servers' remote_servers name it.")
    ],
    events_url: EventsUrl = None,
) -> None:
    """Lay the event store out on a ClickHouse cluster (ON CLUSTER): a replicated events table on every
    shard, a Distributed `events` table sharded by a hash of the user key, and the identity links and
    aggregate_by's memberships on every node. Idempotent (run it again after an upgrade: it adds what the
    new version needs). Every command given the same --events-url then uses the layout."""
    from funnels.store.events import EventStoreError
    from funnels.store.server_events import ServerEventStore

    if not events_url:
        _fail("the cluster layout lives on a ClickHouse server: give --events-url (or $FUNNELS_EVENTS_URL)")
    try:
        store = ServerEventStore.connect(events_url, init_cluster=cluster)
    except (EventStoreError, ValueError) as error:
        _fail(escape(str(error)))
    try:
        shards = store.shard_count()
    finally:
        store.close()
    typer.echo(f"the events of {store.name} are laid out on cluster {cluster}: {shards} shards")


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="The config file (JSON or YAML).")]) -> None:
    """Check a config file: every problem is listed with its path; exit status 1 if there are any."""
    from funnels.config import ConfigInvalid, load_config

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
    from funnels.config import ConfigInvalid

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
    for line in report.holdout_lines():
        err.print(line, markup=False, highlight=False)
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
