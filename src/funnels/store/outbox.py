"""The outbox: action specs, action jobs and their delivery attempts, as the state store keeps them.

`automation/engine.py` writes here inside the ingest transaction (`store_specs`, `schedule`, `cancel`);
`automation/worker.py` leases due jobs (`claim`), marks at-most-once sends started (`mark_started`),
records what came of them (`record`), ends cut-off sends as unknown (`end_unknown`, `release`) and asks
when to look next (`next_due_ms`); the delivery log, the instance view and `funnels replay` read jobs and
attempts, and a person retries one (`retry`). What an outcome means (backoff, guarantees, the error texts)
is the worker's: this module only stores and finds the rows. Every function runs in the caller's
transaction: it takes the connection of a `StateStore.write()` or `read()`.

A job's `next_ms` is when a worker should look at it next (due time, retry time, or lease expiry while
sending) and NULL once it is final, so finding due jobs is one range scan of a partial index. The
statements that run for every claimed batch are built once, here; the claim's locking is the dialect's
(`dialect.claim_lock`), so each dialect's claim is built once too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Update,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)

from funnels.store import dialect
from funnels.store.notify import due_soon, notify_jobs
from funnels.store.state import (
    action_attempts,
    action_jobs,
    action_specs,
    chunks,
    instance_ids,
    instances,
    satisfied_steps,
)

ACTIVE = ("scheduled", "failed")  # jobs that will still be tried: what `cancel` cancels
RETRYABLE = ("dead", "failed", "unknown")  # what `retry` schedules again


# The worker's and the ingest path's values are named tuples: a claim, a record and a batch's jobs build
# one per job, and a frozen dataclass costs several times more to build.


class StoredJob(NamedTuple):
    """An action job's row (the fields are `action_jobs`' columns, in order)."""

    id: int
    key: str  # the idempotency key every attempt carries
    funnel_id: str
    step_index: int
    action_index: int
    action_type: str
    model: str
    instance_id: int
    spec_id: str
    event_id: str
    event: str
    event_properties: str  # JSON
    event_ts_ms: int
    status: str  # scheduled, sending, sent, failed, dead, cancelled, held_out, capped, suppressed, unknown
    due_ms: int
    next_ms: int | None
    attempts: int
    last_error: str | None
    rendered: str | None  # JSON: what went out on the last attempt
    created_ms: int
    updated_ms: int
    sent_ms: int | None
    lease_owner: str | None
    send_started_ms: int | None  # set while an at-most-once send may be under way


class NewJob(NamedTuple):
    """A job to schedule: `scheduled`, first looked at when it is due."""

    key: str
    funnel_id: str
    step_index: int
    action_index: int
    action_type: str
    model: str
    instance_id: int
    spec_id: str
    event_id: str
    event: str
    event_properties: str  # JSON
    event_ts_ms: int
    due_ms: int
    created_ms: int


class Attempt(NamedTuple):
    """One delivery attempt of a job, as the delivery log keeps it."""

    # Read: its place in the job's log, from 1 (a manual retry does not restart it). Written: ignored,
    # `record` numbers the log itself; the worker's own count restarts after a retry (the attempt budget).
    attempt: int
    started_ms: int
    outcome: str  # sent, failed, dead, unknown
    status_code: int | None
    error: str | None
    response: str | None


class Outcome(NamedTuple):
    """What became of one leased job: the job's new state, and the attempt made if one was."""

    job_id: int
    status: str  # sent, failed, dead, cancelled, scheduled (waiting for quiet hours), unknown
    next_ms: int | None  # when to look at the job again; None once it is final
    error: str | None
    rendered: str | None  # JSON of what went out; None keeps what is stored
    attempt: Attempt | None = None


class GoalCounts(NamedTuple):
    """One group of an action's jobs measured on a goal (`goal_counts`)."""

    decided: int  # converted, or their window closed without
    converted: int
    pending: int  # not converted, window still open


@dataclass(frozen=True)
class JobFilter:
    """Which jobs the delivery log lists; every field given must match."""

    status: str | None = None
    funnel: str | None = None
    model: str | None = None
    id: str | None = None  # any id of an instance (of `model`, when given)


# --- writing jobs (the ingest transaction) -----------------------------------------------------------


def store_specs(connection: Connection, specs: Iterable[tuple[str, bytes]]) -> None:
    """Keep each (spec id, canonical JSON) of an action definition; an id already stored is left as is."""
    rows = [{"id": spec_id, "spec": raw.decode()} for spec_id, raw in specs]
    if rows:
        connection.execute(dialect.insert(connection, action_specs).on_conflict_do_nothing(), rows)


def schedule(connection: Connection, jobs: Sequence[NewJob]) -> dict[str, int]:
    """Write the jobs (one statement); returns the id of each one written, by key. A job whose key is
    taken already is not written: no action is scheduled twice. Workers are woken (`notify_jobs`) when
    a job written is due soon; later ones are found by their polls."""
    if not jobs:
        return {}
    rows = [
        {
            **job._asdict(),
            "status": "scheduled",
            "next_ms": job.due_ms,
            "attempts": 0,
            "updated_ms": job.created_ms,
        }
        for job in jobs
    ]
    statement = (
        dialect.insert(connection, action_jobs)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(action_jobs.c.id, action_jobs.c.key)
    )
    written = {row.key: int(row.id) for row in connection.execute(statement, rows)}
    if any(job.key in written and due_soon(job.due_ms, job.created_ms) for job in jobs):
        notify_jobs(connection)
    return written


def cancel(
    connection: Connection,
    instance_id: int,
    funnel_id: str,
    actions: Collection[tuple[int, int]],
    error: str,
    now_ms: int,
) -> list[int]:
    """Cancel the instance's jobs in the funnel at these (step index, action index) positions that will
    still be tried (`ACTIVE`), with `error` as their last error; returns their ids."""
    rows = connection.execute(
        update(action_jobs)
        .where(
            action_jobs.c.instance_id == instance_id,
            action_jobs.c.funnel_id == funnel_id,
            action_jobs.c.status.in_(ACTIVE),
            tuple_(action_jobs.c.step_index, action_jobs.c.action_index).in_(actions),
        )
        .values(status="cancelled", next_ms=None, last_error=error, updated_ms=now_ms)
        .returning(action_jobs.c.id)
    )
    return [int(row.id) for row in rows]


# --- delivering (the worker) -------------------------------------------------------------------------

_DUE_IDS = (
    select(action_jobs.c.id)
    .where(action_jobs.c.next_ms <= bindparam("now"))
    .order_by(action_jobs.c.next_ms)
    .limit(bindparam("claim_limit"))
)


def _claim_statement(due_ids: Select[Any]) -> Update:
    return (
        update(action_jobs)
        .where(action_jobs.c.id.in_(due_ids.scalar_subquery()))
        .values(
            status="sending",
            next_ms=bindparam("lease_until"),
            updated_ms=bindparam("now"),
            lease_owner=bindparam("owner"),
        )
        .returning(*action_jobs.c)  # `send_started_ms` as it was: set means a send was cut off
    )


# One UPDATE … WHERE id IN (SELECT … ORDER BY next_ms LIMIT n) RETURNING per dialect, locked its way.
_CLAIMS = {name: _claim_statement(dialect.claim_lock(name, _DUE_IDS)) for name in dialect.NAMES}
# A job still leased to the worker named `owner`: only such a job's row is that worker's to change.
_HELD_BY = (action_jobs.c.status == "sending") & (action_jobs.c.lease_owner == bindparam("owner"))
# Just before at-most-once sends: the jobs this worker still holds are marked (and only those are sent).
_MARK_STARTED = (
    update(action_jobs)
    .where(action_jobs.c.id.in_(bindparam("job_ids", expanding=True)), _HELD_BY)
    .values(send_started_ms=bindparam("now"))
    .returning(action_jobs.c.id)
)
_SPECS = select(action_specs.c.id, action_specs.c.spec).where(
    action_specs.c.id.in_(bindparam("spec_ids", expanding=True))
)
_RECORD = (
    update(action_jobs)
    .where(action_jobs.c.id == bindparam("job_id"), _HELD_BY)
    .values(
        status=bindparam("status"),
        next_ms=bindparam("next_ms"),
        updated_ms=bindparam("updated_ms"),
        last_error=bindparam("last_error"),
        rendered=func.coalesce(bindparam("rendered"), action_jobs.c.rendered),
        sent_ms=func.coalesce(bindparam("sent_ms"), action_jobs.c.sent_ms),
        attempts=action_jobs.c.attempts + bindparam("attempted"),
        send_started_ms=None,
    )
)
# An attempt is numbered by its place in the job's whole log, not by the worker's count (which restarts at 1
# after a manual retry, so a retried job once showed two attempts numbered 1).
_logged = action_attempts.alias("logged")
_LOG_ATTEMPTS = insert(action_attempts).values(
    job_id=bindparam("job_id"),
    attempt=select(func.count() + 1).where(_logged.c.job_id == bindparam("job_id")).scalar_subquery(),
    started_ms=bindparam("started_ms"),
    finished_ms=bindparam("finished_ms"),
    outcome=bindparam("outcome"),
    status_code=bindparam("status_code"),
    error=bindparam("error"),
    response=bindparam("response"),
)
# A dead worker's jobs: `sending` ones are few (the leased), so this reads the status index, not the table.
_RELEASE = (
    update(action_jobs)
    .where(_HELD_BY & action_jobs.c.send_started_ms.is_(None))
    .values(status="scheduled", next_ms=bindparam("now"), updated_ms=bindparam("now"))
)
# The IS NOT NULL term lets SQLite answer from the partial index (one seek, however many jobs).
_NEXT_DUE = select(func.min(action_jobs.c.next_ms)).where(action_jobs.c.next_ms.is_not(None))


def claim(
    connection: Connection, owner: str, now_ms: int, lease_until_ms: int, limit: int
) -> list[StoredJob]:
    """Lease up to `limit` due jobs, those with the smallest `next_ms` first, to `owner` until
    `lease_until_ms`: they become `sending`, with the lease's expiry as their `next_ms`. Returned as
    leased, but with `send_started_ms` as it was: set means an at-most-once send was cut off."""
    rows = connection.execute(
        _CLAIMS[connection.dialect.name],
        {"now": now_ms, "lease_until": lease_until_ms, "claim_limit": limit, "owner": owner},
    )
    return [StoredJob(*row) for row in rows]


def mark_started(connection: Connection, job_ids: Sequence[int], owner: str, now_ms: int) -> set[int]:
    """Mark these jobs' sends as started at `now_ms`, those still leased to `owner`; returns their ids."""
    rows = connection.execute(_MARK_STARTED, {"job_ids": job_ids, "owner": owner, "now": now_ms})
    return set(rows.scalars())


def record(connection: Connection, outcomes: Sequence[Outcome], now_ms: int, owner: str) -> None:
    """Write what became of jobs leased to `owner` (one statement for the jobs, one for the attempts): a
    job is only updated while it is still leased (`sending`) to `owner` (a worker whose lease ran out and
    whose job another took must not overwrite that one's result), but every attempt made is logged."""
    if not outcomes:
        return
    connection.execute(
        _RECORD,
        [
            {
                "job_id": outcome.job_id,
                "owner": owner,
                "status": outcome.status,
                "next_ms": outcome.next_ms,
                "updated_ms": now_ms,
                "last_error": outcome.error,
                "rendered": outcome.rendered,
                "sent_ms": now_ms if outcome.status == "sent" else None,
                "attempted": int(outcome.attempt is not None),
            }
            for outcome in outcomes
        ],
    )
    attempts = [
        {"job_id": outcome.job_id, "finished_ms": now_ms, **outcome.attempt._asdict()}
        for outcome in outcomes
        if outcome.attempt is not None
    ]
    for row in attempts:
        del row["attempt"]  # _LOG_ATTEMPTS numbers the log
    if attempts:
        connection.execute(_LOG_ATTEMPTS, attempts)


def _end_unknown(
    connection: Connection, where: ColumnElement[bool], params: dict[str, Any], now_ms: int, error: str
) -> int:
    rows = connection.execute(
        update(action_jobs)
        .where(where)
        .values(
            status="unknown",
            next_ms=None,
            updated_ms=now_ms,
            last_error=error,
            attempts=action_jobs.c.attempts + 1,
        )
        .returning(action_jobs.c.id, action_jobs.c.attempts, action_jobs.c.send_started_ms),
        params,
    ).all()
    if rows:
        connection.execute(
            _LOG_ATTEMPTS,
            [
                {
                    "job_id": row.id,
                    "started_ms": row.send_started_ms,
                    "finished_ms": now_ms,
                    "outcome": "unknown",
                    "status_code": None,
                    "error": error,
                    "response": None,
                }
                for row in rows
            ],
        )
    return len(rows)


def end_unknown(connection: Connection, job_ids: Collection[int], now_ms: int, error: str) -> int:
    """End these jobs (at-most-once sends that were cut off) as `unknown`, never to be tried again by
    themselves, each with an attempt of that outcome and `error` in the delivery log; returns how many."""
    return _end_unknown(connection, action_jobs.c.id.in_(job_ids), {}, now_ms, error)


def release(connection: Connection, owner: str, now_ms: int, error: str) -> tuple[int, int]:
    """The jobs `owner` (a worker known to be dead) still holds, released at once instead of when their
    lease ends: those whose send had not started are due now, those whose send had started end `unknown`
    (as `end_unknown`). Returns (released, unknown)."""
    started = _HELD_BY & action_jobs.c.send_started_ms.is_not(None)
    unknown = _end_unknown(connection, started, {"owner": owner}, now_ms, error)
    released = connection.execute(_RELEASE, {"owner": owner, "now": now_ms}).rowcount
    if released:
        notify_jobs(connection)
    return released, unknown


def next_due_ms(connection: Connection) -> int | None:
    """When the first job is to be looked at (due, retry or lease expiry); None when none is pending."""
    value = connection.execute(_NEXT_DUE).scalar()
    return None if value is None else int(value)


def last_due_ms(connection: Connection) -> int | None:
    """When the last job is to be looked at; None when none is pending."""
    value = connection.execute(select(func.max(action_jobs.c.next_ms))).scalar()
    return None if value is None else int(value)


def specs(connection: Connection, spec_ids: Iterable[str]) -> dict[str, str]:
    """The stored action definitions (canonical JSON) by spec id; ids not stored are left out."""
    found: dict[str, str] = {}
    for chunk in chunks(spec_ids):
        for spec_id, spec in connection.execute(_SPECS, {"spec_ids": chunk}):
            found[spec_id] = spec
    return found


# --- reading and retrying (the delivery log, the instance view, replay) ------------------------------

_ATTEMPTS = (
    select(
        action_attempts.c.job_id,
        action_attempts.c.attempt,
        action_attempts.c.started_ms,
        action_attempts.c.outcome,
        action_attempts.c.status_code,
        action_attempts.c.error,
        action_attempts.c.response,
    )
    .where(action_attempts.c.job_id.in_(bindparam("job_ids", expanding=True)))
    .order_by(action_attempts.c.job_id, action_attempts.c.id)
)


def _filtered(query: Select[Any], where: JobFilter) -> Select[Any]:
    if where.status:
        query = query.where(action_jobs.c.status == where.status)
    if where.funnel:
        query = query.where(action_jobs.c.funnel_id == where.funnel)
    if where.model:
        query = query.where(action_jobs.c.model == where.model)
    if where.id is not None:
        owners = select(instance_ids.c.instance_id).where(instance_ids.c.id_text == where.id)
        if where.model:
            owners = owners.where(instance_ids.c.model == where.model)
        query = query.where(action_jobs.c.instance_id.in_(owners))
    return query


def counts_by_action(connection: Connection) -> list[tuple[str, int, int, str, str, int]]:
    """(funnel, step index, action index, action type, status, jobs) for every action and status with
    jobs, in that order: one pass over the jobs table."""
    key = (action_jobs.c.funnel_id, action_jobs.c.step_index, action_jobs.c.action_index)
    rows = connection.execute(
        select(*key, func.min(action_jobs.c.action_type), action_jobs.c.status, func.count())
        .group_by(*key, action_jobs.c.status)
        .order_by(*key, action_jobs.c.status)
    )
    return [(str(f), int(s), int(a), str(t), str(status), int(n)) for f, s, a, t, status, n in rows]


def count_jobs(connection: Connection, where: JobFilter) -> int:
    return int(
        connection.execute(_filtered(select(func.count()).select_from(action_jobs), where)).scalar_one()
    )


def list_jobs(connection: Connection, where: JobFilter, *, limit: int, offset: int) -> list[StoredJob]:
    """The jobs `where` matches, newest first, `limit` of them after skipping `offset`."""
    rows = connection.execute(
        _filtered(select(action_jobs), where).order_by(action_jobs.c.id.desc()).limit(limit).offset(offset)
    )
    return [StoredJob(*row) for row in rows]


def find_job(connection: Connection, job_id: int) -> StoredJob | None:
    row = connection.execute(select(action_jobs).where(action_jobs.c.id == job_id)).first()
    return None if row is None else StoredJob(*row)


def timeline_jobs(
    connection: Connection,
    instance_id: int,
    before_ms: int,
    before_id: int | None,
    *,
    inclusive: bool,
    limit: int,
) -> list[StoredJob]:
    """The instance's jobs created before a position, newest (by creation, then id) first, at most
    `limit`: created before `before_ms` (at it too when `inclusive`), or at it with an id below
    `before_id` when that is given."""
    created = action_jobs.c.created_ms
    condition = created <= before_ms if inclusive else created < before_ms
    if before_id is not None:
        condition = condition | ((created == before_ms) & (action_jobs.c.id < before_id))
    rows = connection.execute(
        select(action_jobs)
        .where(action_jobs.c.instance_id == instance_id, condition)
        .order_by(created.desc(), action_jobs.c.id.desc())
        .limit(limit)
    )
    return [StoredJob(*row) for row in rows]


def jobs_and_primary_ids(connection: Connection) -> list[tuple[StoredJob, str]]:
    """Every job with its instance's primary id (a job whose instance does not exist is left out)."""
    rows = connection.execute(
        select(action_jobs, instances.c.primary_id).join(
            instances, instances.c.id == action_jobs.c.instance_id
        )
    )
    return [(StoredJob(*row[:-1]), row[-1]) for row in rows]


def attempts_of(connection: Connection, job_ids: Collection[int]) -> dict[int, list[Attempt]]:
    """The jobs' delivery attempts in the order they were made (jobs without any are left out)."""
    found: dict[int, list[Attempt]] = {}
    for job_id, *attempt in connection.execute(_ATTEMPTS, {"job_ids": list(job_ids)}):
        found.setdefault(job_id, []).append(Attempt(*attempt))
    return found


def retry(connection: Connection, job_id: int, now_ms: int) -> str | None:
    """Schedule a `RETRYABLE` job to be tried now with a fresh set of attempts; returns its status before,
    or None if there is no such job. Other jobs do not change. An `unknown` job's send may have reached
    the receiver: retrying it is a person's decision to send it once more."""
    status = connection.execute(select(action_jobs.c.status).where(action_jobs.c.id == job_id)).scalar()
    if status in RETRYABLE:
        connection.execute(
            update(action_jobs)
            .where(action_jobs.c.id == job_id)
            .values(status="scheduled", next_ms=now_ms, attempts=0, updated_ms=now_ms, send_started_ms=None)
        )
        notify_jobs(connection)
    return status


# Treated: due and not held out, whatever the delivery did (an intention-to-treat comparison).
TREATED = ("sent", "failed", "dead", "unknown")


def goal_counts(
    connection: Connection,
    funnel_id: str,
    step_index: int,
    action_index: int,
    goal_step: int,
    within_ms: int,
    now_ms: int,
) -> tuple[GoalCounts, GoalCounts]:
    """(treated, held out) jobs of one action measured on reaching the funnel's `goal_step` within
    `within_ms` of each job's due time, as of `now_ms`. One scan of the action's jobs, each joined to its
    instance's row for the goal step (the primary key)."""
    jobs, steps = action_jobs, satisfied_steps
    reached = and_(steps.c.event_ts_ms >= jobs.c.due_ms, steps.c.event_ts_ms <= jobs.c.due_ms + within_ms)
    open_ = jobs.c.due_ms + within_ms > now_ms
    group = case((jobs.c.status == "held_out", "holdout"), else_="treated")
    rows = connection.execute(
        select(
            group.label("grp"),
            func.sum(case((or_(reached, ~open_), 1), else_=0)),
            func.sum(case((reached, 1), else_=0)),
            func.count(),
        )
        .select_from(
            jobs.outerjoin(
                steps,
                and_(
                    steps.c.instance_id == jobs.c.instance_id,
                    steps.c.funnel_id == jobs.c.funnel_id,
                    steps.c.step_index == goal_step,
                ),
            )
        )
        .where(
            jobs.c.funnel_id == funnel_id,
            jobs.c.step_index == step_index,
            jobs.c.action_index == action_index,
            jobs.c.status.in_((*TREATED, "held_out")),
        )
        .group_by(group)
    )
    found = {
        grp: GoalCounts(int(decided or 0), int(converted or 0), int(total) - int(decided or 0))
        for grp, decided, converted, total in rows
    }
    empty = GoalCounts(0, 0, 0)
    return found.get("treated", empty), found.get("holdout", empty)


class Message(NamedTuple):
    """A job that counts toward a frequency cap: sent, or being sent (`recent_messages`)."""

    id: int
    instance_id: int
    action_type: str
    funnel_id: str
    status: str  # sent or sending
    due_ms: int
    sent_ms: int | None


def recent_messages(
    connection: Connection, instance_ids: Collection[int], channels: Collection[str], since_ms: int
) -> list[Message]:
    """The jobs of these instances on these channels sent since `since_ms` or being sent now (leased):
    what a frequency cap counts. Read through the (instance, funnel) index."""
    found: list[Message] = []
    for chunk in chunks(instance_ids):
        found.extend(
            Message(*row)
            for row in connection.execute(
                select(
                    action_jobs.c.id,
                    action_jobs.c.instance_id,
                    action_jobs.c.action_type,
                    action_jobs.c.funnel_id,
                    action_jobs.c.status,
                    action_jobs.c.due_ms,
                    action_jobs.c.sent_ms,
                ).where(
                    action_jobs.c.instance_id.in_(chunk),
                    action_jobs.c.action_type.in_(list(channels)),
                    or_(
                        and_(action_jobs.c.status == "sent", action_jobs.c.sent_ms >= since_ms),
                        action_jobs.c.status == "sending",
                    ),
                )
            )
        )
    return found
