"""The delivery log: action jobs with their attempts, filtered and paginated, and retrying dead ones (and
at-most-once ones whose outcome is unknown)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, func, select, update

from funnels.automation.identity import load_instances
from funnels.channels import ACTION_TYPES
from funnels.channels.base import redact
from funnels.store.state import action_attempts, action_jobs, instance_ids

STATUSES = ("scheduled", "sending", "sent", "failed", "dead", "cancelled", "unknown")
RETRYABLE = ("dead", "failed", "unknown")


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    funnel: str | None = None
    model: str | None = None
    id: str | None = None  # any id of an instance (of `model`, when given)


def _where(query: Any, where: JobFilter) -> Any:
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


def _attempts(connection: Connection, job_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    rows = connection.execute(
        select(action_attempts)
        .where(action_attempts.c.job_id.in_(job_ids))
        .order_by(action_attempts.c.job_id, action_attempts.c.id)
    )
    for row in rows:
        found.setdefault(row.job_id, []).append(
            {
                "attempt": row.attempt,
                "at": iso(row.started_ms),
                "outcome": row.outcome,
                "status_code": row.status_code,
                "error": row.error,
                "response": row.response,
            }
        )
    return found


def _shown(action_type: str, rendered: str | None) -> Any:
    """Stored args as the API shows them: redacted again, for rows written before redaction was complete
    (the worker stores them redacted already; `redact` is idempotent)."""
    if not rendered:
        return None
    values = orjson.loads(rendered)
    channel = ACTION_TYPES.get(action_type)
    return redact(channel.args, values) if channel is not None and isinstance(values, dict) else values


def job_rows(connection: Connection, rows: list[Any]) -> list[dict[str, Any]]:
    """Jobs as the API shows them, each with its attempts."""
    attempts = _attempts(connection, [row.id for row in rows])
    instances = load_instances(connection, list({row.instance_id for row in rows}))
    return [
        {
            "id": row.id,
            "status": row.status,
            "funnel": row.funnel_id,
            "step": row.step_index + 1,
            "action": row.action_index + 1,
            "type": row.action_type,
            "instance": instances[row.instance_id].ref()
            if row.instance_id in instances
            else {"model": row.model, "id": None},
            "event": row.event,
            "event_id": row.event_id,
            "idempotency_key": row.key,
            "due_at": iso(row.due_ms),
            "next_attempt_at": iso(row.next_ms) if row.status in ("scheduled", "failed") else None,
            "attempts": row.attempts,
            "last_error": row.last_error,
            "rendered": _shown(row.action_type, row.rendered),
            "created_at": iso(row.created_ms),
            "updated_at": iso(row.updated_ms),
            "sent_at": iso(row.sent_ms),
            "attempt_log": attempts.get(row.id, []),
        }
        for row in rows
    ]


def list_jobs(connection: Connection, where: JobFilter, page: int, size: int) -> dict[str, Any]:
    """One page of jobs, newest first, in the spec's list shape `{data, total, page, size, has_more}`."""
    total = int(connection.execute(_where(select(func.count()).select_from(action_jobs), where)).scalar_one())
    rows = connection.execute(
        _where(select(action_jobs), where)
        .order_by(action_jobs.c.id.desc())
        .limit(size)
        .offset((page - 1) * size)
    ).all()
    return {
        "data": job_rows(connection, list(rows)),
        "total": total,
        "page": page,
        "size": size,
        "has_more": page * size < total,
    }


def get_job(connection: Connection, job_id: int) -> dict[str, Any] | None:
    row = connection.execute(select(action_jobs).where(action_jobs.c.id == job_id)).first()
    return None if row is None else job_rows(connection, [row])[0]


def retry_job(connection: Connection, job_id: int, now_ms: int) -> str | None:
    """Schedule a dead, failing or unknown job to be sent now with a fresh set of attempts; returns its
    status before, or None if there is no such job. Only `RETRYABLE` jobs change. An `unknown` job's send
    may have reached the receiver: retrying it is a person's decision to send it once more."""
    status = connection.execute(select(action_jobs.c.status).where(action_jobs.c.id == job_id)).scalar()
    if status in RETRYABLE:
        connection.execute(
            update(action_jobs)
            .where(action_jobs.c.id == job_id)
            .values(status="scheduled", next_ms=now_ms, attempts=0, updated_ms=now_ms, send_started_ms=None)
        )
    return status
