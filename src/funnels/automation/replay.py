"""`funnels replay`: historical events through the automation on a virtual clock, with nothing sent.

How it works: the config is loaded into an `Automation` over a fresh `StateStore` in a temporary directory
(never the user's data directory), with a `ManualClock`. The file's events are validated line by line with
the very shapes the server accepts (`IdentifyBody`/`EventBody` of `/api/v1`, or `NativeEvent` of
`/v0/events`, which becomes a signal exactly as the server makes one), then sorted by timestamp (stable:
file order breaks ties). Before each event the clock steps through every job that comes due before the
event's time, one due time at a time (`Worker.next_due_ms`), and the worker runs until idle at each: so a
reminder fires at exactly its due time, and quiet hours move it to exactly when its window opens. Then the
clock is set to the event's time and the event goes through the engine's `Batch`, as the ingest
transaction would run it (a repeated event id is skipped, as the event log makes it; the log itself is not
written: nothing ships it). After the last event the clock steps on to `--to`, or without it until nothing
is pending.

The worker's dispatch is a recorder: it gets the args the worker rendered and validated, notes them with the
virtual time and answers "delivered", so every other decision (`unless`, quiet hours, template errors) is
the real worker's. The report is read back from `action_jobs` (status, errors, send times) joined with what
the recorder captured.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from rich.table import Table
from rich.text import Text

from funnels.automation.engine import Batch, Signal
from funnels.automation.inputs import EventBody, IdentifyBody, unknown_models
from funnels.automation.lift import action_lifts
from funnels.automation.runtime import Automation
from funnels.automation.worker import Worker
from funnels.channels.base import Channel, DeliveryRequest, DeliveryResult, redact
from funnels.clock import ManualClock
from funnels.events import EPOCH, NativeEvent, parse_timestamp
from funnels.store import outbox
from funnels.store.identity import count_instances
from funnels.store.progress import all_satisfied
from funnels.store.state import Connection, StateStore
from funnels.types import RowError

TIMESTAMP_REQUIRED = "timestamp: is required to replay an event"
DAY_MS = 86_400_000
# Quiet hours move a job by at most a day (plus a DST hour): without --to, the clock runs this far past
# the last due time, which also bounds a job the worker keeps retrying.
SETTLE_MS = 2 * DAY_MS
SUMMARY_CHARS = 120
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ReplayFileError(ValueError):
    """The events file cannot be read at all (missing, unreadable, or a `.json` that is not an array)."""


NOT_SENT = ("held_out", "capped", "suppressed")  # final statuses of jobs due but not sent, on purpose


@dataclass(frozen=True)
class _Item:
    where: str  # "events.ndjson line 3", for notes
    ts_ms: int
    signal: Signal


@dataclass(frozen=True)
class _Bad:
    message: str  # why a line is not JSON


@dataclass(frozen=True)
class Sent:
    """What the recorder captured for one delivery that would have happened."""

    at_ms: int
    key: str  # the job's idempotency key
    channel: str
    args: dict[str, Any]


@dataclass(frozen=True)
class ReplayRow:
    """One action job and what became of it."""

    time_ms: int  # sent, cancelled or died at; for a pending job, the end of the replay
    job_id: int
    model: str
    instance: str  # primary id
    funnel: str
    step: int  # 1-based
    step_event: str
    action: int  # 1-based
    type: str
    status: str  # sent, cancelled, dead, failed, pending, or one of NOT_SENT
    outcome: str  # for people: "sent", "cancelled (reached …)", "held out: …", "dead: …", "pending until …"
    args: dict[str, Any] | None  # the rendered args (sent, or dead after rendering)
    summary: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": format_ms(self.time_ms),
            "time_ms": self.time_ms,
            "job": self.job_id,
            "model": self.model,
            "instance": self.instance,
            "funnel": self.funnel,
            "step": self.step,
            "event": self.step_event,
            "action": self.action,
            "type": self.type,
            "status": self.status,
            "outcome": self.outcome,
            "summary": self.summary,
            "args": self.args,
        }


@dataclass
class ReplayReport:
    """Everything a replay found: the action rows in time order, counts, skipped lines and notes."""

    rows: list[ReplayRow] = field(default_factory=list)
    events: int = 0  # events fed (valid and within --from/--to)
    instances: int = 0
    errors: list[RowError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not errors: identity conflicts, unknown instances
    end_ms: int = 0
    lifts: list[dict[str, Any]] = field(default_factory=list)  # `GET /v0/lift`'s rows, at the replay's end

    def count(self, *statuses: str) -> int:
        return sum(row.status in statuses for row in self.rows)

    def summary(self) -> str:
        return (
            f"{self.events} events, {self.instances} instances, {self.count('sent')} actions would fire, "
            f"{self.count('cancelled')} cancelled, {self.count('dead', 'failed')} failed, "
            f"{self.count('pending')} pending"
            + "".join(
                f", {count} {status.replace('_', ' ')}"
                for status in NOT_SENT
                if (count := self.count(status))
            )
        )

    def holdout_lines(self) -> list[str]:
        """Per action with a holdout: both groups on its goal as of the replay's end, and the lift."""
        lines = []
        for row in self.lifts:
            action = (
                f"holdout {row['funnel']} step {row['step']} {row['event']} action {row['action']} "
                f"{row['type']} ({row['holdout_percent']:g}%)"
            )
            goal, treated, held, lift = row["goal"], row["treated"], row["holdout"], row["lift"]
            if goal is None:
                lines.append(f"{action}: no goal (the funnel's last step; set `goal`)")
                continue
            within = f"{goal['within_seconds'] / 86_400:g} d"
            groups = "; ".join(
                f"{name} {group['converted']} of {group['jobs']} converted ({_percent(group['rate'])})"
                + (f", {group['pending']} pending" if group["pending"] else "")
                for name, group in (("treated", treated), ("held out", held))
            )
            measured = (
                "lift –"
                if lift["absolute"] is None
                else (
                    f"lift {_points(lift['absolute'])} (95% CI {_points(lift['absolute_ci'][0])} to "
                    f"{_points(lift['absolute_ci'][1])}), p {lift['p_value']:.3f}"
                )
            )
            lines.append(f"{action}, goal {goal['event']} within {within}: {groups}; {measured}")
        return lines


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


def _points(difference: float) -> str:
    return f"{'+' if difference >= 0 else '−'}{abs(difference) * 100:.1f} pp"


def format_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC (`2026-04-01T09:00:00Z`; milliseconds only when there are any)."""
    moment = EPOCH + timedelta(milliseconds=ms)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def parse_moment(text: str, *, end_of_day: bool = False) -> int:
    """`--from`/`--to`: an ISO date (its start, or with `end_of_day` its last millisecond) or a date-time
    (naive means UTC), or epoch milliseconds. Raises ValueError."""
    text = text.strip()
    if _DATE.match(text):
        day = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        start = (day - EPOCH) // timedelta(milliseconds=1)
        return start + DAY_MS - 1 if end_of_day else start
    return parse_timestamp(text)


# --- reading ------------------------------------------------------------------------------------------


def _objects(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(position, unit, parsed JSON or `_Bad` saying why not) per line, or per item of a JSON array."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ReplayFileError(f"{path}: cannot read the file ({error.strerror or error})") from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    if path.suffix.lower() == ".json" and raw.lstrip().startswith(b"["):
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise ReplayFileError(f"{path}: not a valid JSON array: {error}") from None
        for index, item in enumerate(items, start=1):
            yield index, "item", item
        return
    for line_no, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, "line", orjson.loads(line)
        except orjson.JSONDecodeError as error:
            yield line_no, "line", _Bad(f"not valid JSON: {error}")


def _problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        where = ".".join(str(part) for part in item["loc"])
        problems.append(f"{where}: {message}" if where else message)
    return problems


def _signal(obj: Any, automation: Automation) -> tuple[int, Signal] | str:
    """The event's time and signal, or what is wrong with it (`; `-separated, every problem at once)."""
    if isinstance(obj, _Bad):
        return obj.message
    if not isinstance(obj, dict):
        return "expected a JSON object (an identify or an event)"
    missing_time = [TIMESTAMP_REQUIRED] if obj.get("timestamp") is None else []
    # /api/v1 shapes name instances by `ids`; the /v0/events shape names a user (`user_id`).
    native = "ids" not in obj and "model" not in obj and ("user_id" in obj or "anonymous_id" in obj)
    if native:
        try:
            event = NativeEvent.model_validate(obj)
        except ValidationError as error:
            return "; ".join(_problems(error) + missing_time)
        if missing_time:
            return missing_time[0]
        ts_ms = parse_timestamp(event.timestamp)
        return ts_ms, automation.signal_for(event.to_event(ts_ms))
    shape: type[IdentifyBody | EventBody] = IdentifyBody if obj.get("type") == "identify" else EventBody
    try:
        body = shape.model_validate(obj)
    except ValidationError as error:
        return "; ".join(_problems(error) + missing_time)
    problems = [
        f"{path.lstrip('.')}: {message}" for path, message in unknown_models(automation, body, "").items()
    ]
    if problems or missing_time:
        return "; ".join(problems + missing_time)
    assert body.timestamp is not None
    ts_ms = parse_timestamp(body.timestamp)
    return ts_ms, body.signal(ts_ms)


def read_events(path: Path, automation: Automation) -> tuple[list[_Item], list[RowError]]:
    """Every valid event of the file as a signal, in file order, and every bad line."""
    items: list[_Item] = []
    errors: list[RowError] = []
    for position, unit, obj in _objects(path):
        parsed = _signal(obj, automation)
        if isinstance(parsed, str):
            errors.append(RowError(str(path), position, parsed, unit))
        else:
            items.append(_Item(f"{path} {unit} {position}", *parsed))
    return items, errors


# --- running ------------------------------------------------------------------------------------------


class Recorder:
    """The replay's dispatch: notes what would go out, at the virtual time, and sends nothing."""

    def __init__(self) -> None:
        self.sent: dict[str, Sent] = {}

    def __call__(
        self, channel: Channel, args: BaseModel, settings: BaseModel, request: DeliveryRequest
    ) -> DeliveryResult:
        payload = redact(channel.args, args.model_dump(by_alias=True, exclude_none=True))
        self.sent[request.idempotency_key] = Sent(
            request.now_ms, request.idempotency_key, channel.name, payload
        )
        return DeliveryResult(ok=True, sent=payload)


class _Timeline:
    """The virtual clock and the worker: steps through due times in order, delivering what is due at each.

    `next_due` is a lower bound of the earliest pending job's time, kept from the jobs each event
    schedules (a cancellation only makes the true time later), so the store is asked only when a job may
    be due."""

    def __init__(self, worker: Worker, clock: ManualClock) -> None:
        self.worker = worker
        self.clock = clock
        self.next_due: int | None = None

    def scheduled(self, due_ms: int) -> None:
        self.next_due = due_ms if self.next_due is None else min(self.next_due, due_ms)

    def run_until(self, until_ms: int) -> None:
        while self.next_due is not None and self.next_due <= until_ms:
            self.clock.set(max(self.next_due, self.clock.now_ms()))
            self.worker.run_until_idle()
            self.next_due = self.worker.next_due_ms()


def replay(
    events_path: Path, config_path: Path, start_ms: int | None = None, end_ms: int | None = None
) -> ReplayReport:
    """Replay a file of events through a config; raises `ReplayFileError` or `ConfigInvalid` (nothing ran)."""
    if not events_path.is_file():
        raise ReplayFileError(f"{events_path}: no such file")
    with tempfile.TemporaryDirectory(prefix="funnels-replay-") as scratch:
        state = StateStore(Path(scratch) / "state.sqlite3")
        try:
            return _replay(state, events_path, config_path, start_ms, end_ms)
        finally:
            state.close()


def _replay(
    state: StateStore, events_path: Path, config_path: Path, start_ms: int | None, end_ms: int | None
) -> ReplayReport:
    clock = ManualClock(0)
    automation = Automation(state, clock, config_path)
    items, errors = read_events(events_path, automation)
    items = [
        item
        for item in sorted(items, key=lambda item: item.ts_ms)  # stable: file order breaks ties
        if (start_ms is None or item.ts_ms >= start_ms) and (end_ms is None or item.ts_ms <= end_ms)
    ]
    clock.set(items[0].ts_ms if items else start_ms or 0)
    report = ReplayReport(events=len(items), errors=errors)
    recorder = Recorder()
    worker = Worker(state, automation.delivery, clock, dispatch=recorder)
    timeline = _Timeline(worker, clock)
    unknown: list[str] = []
    plan = automation.plan
    assert plan is not None  # loaded from config_path
    received: set[str] = set()  # a repeated event id is a no-op, as the server's event log makes it
    try:
        for item in items:
            # Jobs due before the event fire first; one due at the event's very millisecond is decided
            # after it (so an `unless` step reached exactly at the due time cancels the job).
            timeline.run_until(item.ts_ms - 1)
            clock.set(max(item.ts_ms, clock.now_ms()))
            if item.signal.event.event_id not in received:
                with state.write() as connection:
                    batch = Batch(connection, plan, clock.now_ms(), [item.signal])
                    outcome = batch.process(item.signal)
                    batch.flush()
                if not outcome.refused:
                    received.add(item.signal.event.event_id)
                for job in outcome.scheduled:
                    timeline.scheduled(job["due_ms"])
                if outcome.status == "conflict":
                    report.notes.append(f"{item.where}: identity conflict: {outcome.reason}")
                elif outcome.status == "unmatched" and item.signal.event.event in plan.step_events:
                    unknown.append(item.where)
            timeline.run_until(clock.now_ms())
        if end_ms is None:
            with state.read() as connection:
                latest = outbox.last_due_ms(connection)
            if latest is not None:
                timeline.run_until(latest + SETTLE_MS)
        else:
            timeline.run_until(end_ms)
            clock.set(max(end_ms, clock.now_ms()))
    finally:
        worker.close()
    if unknown:
        shown = "; ".join(unknown[:3]) + ("; …" if len(unknown) > 3 else "")
        report.notes.append(
            f"{len(unknown)} step event(s) named no known instance (send its identify first): {shown}"
        )
    report.end_ms = clock.now_ms()
    with state.read() as connection:
        report.rows = _rows(connection, automation, recorder, report.end_ms)
        report.instances = count_instances(connection)
    report.lifts = action_lifts(state, plan.config, report.end_ms)
    return report


# --- reporting ----------------------------------------------------------------------------------------


def _rows(connection: Connection, automation: Automation, recorder: Recorder, end_ms: int) -> list[ReplayRow]:
    """Every action job with its outcome, in time order."""
    assert automation.plan is not None
    funnels = {funnel.id: funnel for funnel in automation.plan.config.funnels}
    jobs = outbox.jobs_and_primary_ids(connection)
    specs = {
        spec_id: orjson.loads(spec)
        for spec_id, spec in outbox.specs(connection, {job.spec_id for job, _ in jobs}).items()
    }
    reached: dict[tuple[int, str], list[tuple[int, str]]] = {}
    for row in all_satisfied(connection):
        reached.setdefault((row.instance_id, row.funnel_id), []).append((row.satisfied_ms, row.event))
    rows = []
    for job, primary_id in jobs:
        args: dict[str, Any] | None = None
        sent = recorder.sent.get(job.key)
        if job.status == "sent":
            assert job.sent_ms is not None  # recorded with the status
            args = sent.args if sent is not None else orjson.loads(job.rendered or "null")
            time_ms, status, outcome = job.sent_ms, "sent", "sent"
        elif job.status == "cancelled":
            unless = set(specs[job.spec_id]["unless"])
            reason = next(
                (
                    event
                    for _ms, event in reached.get((job.instance_id, job.funnel_id), [])
                    if event in unless
                ),
                None,
            )
            time_ms, status = job.updated_ms, "cancelled"
            outcome = f"cancelled (reached {reason})" if reason else f"cancelled ({job.last_error})"
        elif job.status in NOT_SENT:  # due, and never sent on purpose: why is its last error
            time_ms, status, outcome = job.updated_ms, job.status, job.last_error or job.status
        elif job.status in ("dead", "failed"):
            time_ms, status, outcome = job.updated_ms, job.status, f"{job.status}: {job.last_error}"
            args = orjson.loads(job.rendered) if job.rendered else None
        else:  # scheduled (or waiting for quiet hours) when the clock stopped
            time_ms, status = end_ms, "pending"
            outcome = f"pending until {format_ms(job.next_ms)}" if job.next_ms is not None else "pending"
        funnel = funnels.get(job.funnel_id)
        rows.append(
            ReplayRow(
                time_ms=time_ms,
                job_id=job.id,
                model=job.model,
                instance=primary_id,
                funnel=job.funnel_id,
                step=job.step_index + 1,
                step_event=funnel.steps[job.step_index].event if funnel else job.event,
                action=job.action_index + 1,
                type=job.action_type,
                status=status,
                outcome=outcome,
                args=args,
                summary=payload_summary(job.action_type, args) if args is not None else "",
            )
        )
    return sorted(rows, key=lambda row: (row.time_ms, row.job_id))


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SUMMARY_CHARS else flat[: SUMMARY_CHARS - 1] + "…"


def payload_summary(action_type: str, args: dict[str, Any]) -> str:
    """One line saying what would go out: email to + subject, slack content, sms to + body, webhook method + url."""
    to = args.get("to", "")
    to = ", ".join(str(item) for item in to) if isinstance(to, list) else str(to)
    if action_type == "email":
        return _one_line(f"to {to}: {args.get('subject', '')}")
    if action_type == "slack":
        return _one_line(str(args.get("content", "")))
    if action_type == "sms":
        return _one_line(f"to {to}: {args.get('body', '')}")
    if action_type == "webhook":
        return _one_line(f"{args.get('method', 'POST')} {args.get('url', '')}")
    return _one_line(orjson.dumps(args).decode())


def rows_table(report: ReplayReport) -> Table:
    """The report's rows as a rich table (times in UTC)."""
    table = Table("time (UTC)", "instance", "funnel", "step", "action", "outcome", "payload")
    for row in report.rows:
        cells = (
            format_ms(row.time_ms),
            f"{row.model} {row.instance}",
            row.funnel,
            f"{row.step} {row.step_event}",
            f"{row.action} {row.type}",
            row.outcome,
            row.summary,
        )
        table.add_row(*(Text(cell) for cell in cells))  # Text: user content is never read as markup
    return table
