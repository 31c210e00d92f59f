"""The delivery log: action jobs with their attempts, filtered and paginated, as the API shows them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from funnels.channels import ACTION_TYPES
from funnels.channels.base import redact
from funnels.store import outbox
from funnels.store.identity import load_instances
from funnels.store.outbox import JobFilter, StoredJob
from funnels.store.state import Connection

STATUSES = (
    "scheduled",
    "sending",
    "sent",
    "failed",
    "dead",
    "cancelled",
    "held_out",
    "capped",
    "suppressed",
    "unknown",
)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _attempts(connection: Connection, job_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    return {
        job_id: [
            {
                "attempt": attempt.attempt,
                "at": iso(attempt.started_ms),
                "outcome": attempt.outcome,
                "status_code": attempt.status_code,
                "error": attempt.error,
                "response": attempt.response,
            }
            for attempt in attempts
        ]
        for job_id, attempts in outbox.attempts_of(connection, job_ids).items()
    }


def _shown(action_type: str, rendered: str | None) -> Any:
    """Stored args as the API shows them: redacted again, for rows written before redaction was complete
    (the worker stores them redacted already; `redact` is idempotent)."""
    if not rendered:
        return None
    values = orjson.loads(rendered)
    channel = ACTION_TYPES.get(action_type)
    return redact(channel.args, values) if channel is not None and isinstance(values, dict) else values


def job_rows(connection: Connection, rows: Sequence[StoredJob]) -> list[dict[str, Any]]:
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
    total = outbox.count_jobs(connection, where)
    rows = outbox.list_jobs(connection, where, limit=size, offset=(page - 1) * size)
    return {
        "data": job_rows(connection, rows),
        "total": total,
        "page": page,
        "size": size,
        "has_more": page * size < total,
    }


def get_job(connection: Connection, job_id: int) -> dict[str, Any] | None:
    row = outbox.find_job(connection, job_id)
    return None if row is None else job_rows(connection, [row])[0]


def action_summary(connection: Connection) -> list[dict[str, Any]]:
    """Each action with jobs: its funnel, step and place, type, and how many of its jobs are in each status
    (every status listed, 0 where none), with the total."""
    actions: dict[tuple[str, int, int], dict[str, Any]] = {}
    for funnel, step, action, kind, status, count in outbox.counts_by_action(connection):
        row = actions.setdefault(
            (funnel, step, action),
            {
                "funnel": funnel,
                "step": step + 1,
                "action": action + 1,
                "type": kind,
                "statuses": dict.fromkeys(STATUSES, 0),
                "total": 0,
            },
        )
        row["statuses"][status] = row["statuses"].get(status, 0) + count
        row["total"] += count
    return list(actions.values())
