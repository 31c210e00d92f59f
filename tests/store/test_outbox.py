"""The outbox's rows on a real state store (SQLite and PostgreSQL): specs, scheduling and cancelling, the
worker's claim, mark, record and release, the delivery log's reads and a person's retry."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite

from funnels.store import outbox
from funnels.store.outbox import Attempt, JobFilter, NewJob, Outcome
from funnels.store.state import StateStore, action_attempts, action_jobs, instance_ids, instances

NOW = 1_000_000
UNKNOWN = "outcome unknown"


@pytest.fixture
def store(state: StateStore) -> StateStore:
    """The conftest's `state`, under the name these tests use."""
    return state


def new_job(
    key: str, *, instance_id: int = 1, funnel: str = "f", step: int = 0, action: int = 0, due: int = NOW
) -> NewJob:
    return NewJob(
        key=key,
        funnel_id=funnel,
        step_index=step,
        action_index=action,
        action_type="webhook",
        model="customer",
        instance_id=instance_id,
        spec_id="spec",
        event_id=f"event-{key}",
        event="sign_up",
        event_properties='{"plan":"pro"}',
        event_ts_ms=NOW - 5,
        due_ms=due,
        created_ms=NOW - 1,
    )


def schedule(store: StateStore, *jobs: NewJob) -> dict[str, int]:
    with store.write() as connection:
        return outbox.schedule(connection, list(jobs))


def job(store: StateStore, job_id: int) -> outbox.StoredJob:
    with store.read() as connection:
        found = outbox.find_job(connection, job_id)
    assert found is not None
    return found


def claim(store: StateStore, owner: str = "w1", now: int = NOW, limit: int = 10) -> list[outbox.StoredJob]:
    with store.write() as connection:
        return outbox.claim(connection, owner, now, now + 1_000, limit)


def attempts(store: StateStore, *job_ids: int) -> dict[int, list[Attempt]]:
    with store.read() as connection:
        return outbox.attempts_of(connection, job_ids)


def test_a_stored_job_has_the_tables_columns_in_order() -> None:
    assert list(outbox.StoredJob._fields) == list(action_jobs.c.keys())


def test_specs_are_stored_once_and_found_by_id(store: StateStore) -> None:
    with store.write() as connection:
        outbox.store_specs(connection, [("a", b'{"v":1}'), ("b", b'{"v":2}'), ("a", b'{"v":1}')])
        outbox.store_specs(connection, [("a", b'{"v":"changed"}')])  # an id stored already is kept
        outbox.store_specs(connection, [])
    many = [f"missing-{n}" for n in range(1_200)]  # more than one IN list's worth
    with store.read() as connection:
        assert outbox.specs(connection, ["a", "b", "c", *many]) == {"a": '{"v":1}', "b": '{"v":2}'}


def test_scheduling_writes_each_key_once(store: StateStore) -> None:
    first = schedule(store, new_job("k1", due=NOW + 50), new_job("k2"))
    assert sorted(first) == ["k1", "k2"]
    again = schedule(store, new_job("k1"), new_job("k3"))
    assert list(again) == ["k3"] and again["k3"] not in first.values()
    assert schedule(store) == {}
    stored = job(store, first["k1"])
    assert (stored.status, stored.due_ms, stored.next_ms, stored.attempts) == (
        "scheduled",
        NOW + 50,
        NOW + 50,
        0,
    )
    assert (stored.created_ms, stored.updated_ms, stored.event_properties) == (
        NOW - 1,
        NOW - 1,
        '{"plan":"pro"}',
    )
    assert stored.sent_ms is None and stored.lease_owner is None and stored.send_started_ms is None


def test_cancel_takes_only_the_instances_active_jobs_at_those_positions(store: StateStore) -> None:
    ids = schedule(
        store,
        new_job("hit", step=0, action=1),
        new_job("failing", step=0, action=2),
        new_job("other-position", step=0, action=3),
        new_job("other-funnel", funnel="g", step=0, action=1),
        new_job("other-instance", instance_id=2, step=0, action=1),
        new_job("sent", step=1, action=0),
    )
    with store.write() as connection:  # one failing (retry pending), one sent
        connection.execute(action_jobs.update().where(action_jobs.c.key == "failing").values(status="failed"))
        connection.execute(action_jobs.update().where(action_jobs.c.key == "sent").values(status="sent"))
    with store.write() as connection:
        cancelled = outbox.cancel(connection, 1, "f", [(0, 1), (0, 2), (1, 0)], "cancelled: 'x'", NOW + 9)
    assert sorted(cancelled) == sorted([ids["hit"], ids["failing"]])
    hit = job(store, ids["hit"])
    assert (hit.status, hit.next_ms, hit.last_error, hit.updated_ms) == (
        "cancelled",
        None,
        "cancelled: 'x'",
        NOW + 9,
    )
    for key, status in [("other-position", "scheduled"), ("other-funnel", "scheduled"), ("sent", "sent")]:
        assert job(store, ids[key]).status == status
    assert job(store, ids["other-instance"]).status == "scheduled"


def test_a_claim_leases_the_earliest_due_jobs(store: StateStore) -> None:
    ids = schedule(
        store, new_job("late", due=NOW), new_job("early", due=NOW - 10), new_job("later", due=NOW + 1)
    )
    with store.read() as connection:
        assert outbox.next_due_ms(connection) == NOW - 10  # what a worker's poll reads
    (first,) = claim(store, limit=1)
    assert first.id == ids["early"]
    assert (first.status, first.next_ms, first.lease_owner, first.updated_ms) == (
        "sending",
        NOW + 1_000,
        "w1",
        NOW,
    )
    assert [leased.id for leased in claim(store, owner="w2")] == [ids["late"]]  # `later` is not due yet
    assert claim(store, owner="w3") == []  # leased jobs are not claimed again before their lease ends
    again = claim(store, owner="w3", now=NOW + 1_000)  # lease expired: due again, with `later`
    assert sorted(leased.id for leased in again) == sorted(ids.values())
    assert {leased.lease_owner for leased in again} == {"w3"}


def test_only_the_holder_marks_a_send_started(store: StateStore) -> None:
    ids = schedule(store, new_job("a"), new_job("b"))
    claim(store, owner="w1")
    with store.write() as connection:
        assert outbox.mark_started(connection, [ids["a"]], "w2", NOW) == set()
        assert outbox.mark_started(connection, [ids["a"], ids["b"]], "w1", NOW + 3) == {ids["a"], ids["b"]}
    assert job(store, ids["a"]).send_started_ms == NOW + 3


def test_record_updates_leased_jobs_and_logs_every_attempt(store: StateStore) -> None:
    ids = schedule(store, new_job("sent"), new_job("retry"), new_job("waiting"), new_job("gone"))
    claim(store)
    with store.write() as connection:
        connection.execute(  # `gone` was cancelled meanwhile; `waiting` had been rendered before
            action_jobs.update().where(action_jobs.c.key == "gone").values(status="cancelled")
        )
        connection.execute(
            action_jobs.update().where(action_jobs.c.key == "waiting").values(rendered='{"old":1}')
        )
        outbox.mark_started(connection, [ids["sent"]], "w1", NOW)
    ok = Attempt(1, NOW + 1, "sent", 200, None, "ok")
    failed = Attempt(1, NOW + 1, "failed", 503, "HTTP 503", None)
    with store.write() as connection:
        outbox.record(
            connection,
            [
                Outcome(ids["sent"], "sent", None, None, '{"url":"u"}', ok),
                Outcome(ids["retry"], "failed", NOW + 60_000, "HTTP 503", '{"url":"u"}', failed),
                Outcome(ids["waiting"], "scheduled", NOW + 3_600_000, None, None),  # quiet hours: no attempt
                Outcome(ids["gone"], "sent", None, None, '{"url":"u"}', ok),
            ],
            NOW + 2,
            "w1",
        )
        outbox.record(connection, [], NOW + 2, "w1")
    sent = job(store, ids["sent"])
    assert (sent.status, sent.next_ms, sent.sent_ms, sent.attempts) == ("sent", None, NOW + 2, 1)
    assert (sent.rendered, sent.send_started_ms, sent.updated_ms) == ('{"url":"u"}', None, NOW + 2)
    retry = job(store, ids["retry"])
    assert (retry.status, retry.next_ms, retry.last_error, retry.sent_ms) == (
        "failed",
        NOW + 60_000,
        "HTTP 503",
        None,
    )
    waiting = job(store, ids["waiting"])
    assert (waiting.status, waiting.attempts, waiting.rendered) == ("scheduled", 0, '{"old":1}')
    assert job(store, ids["gone"]).status == "cancelled"  # no longer leased: not updated...
    logged = attempts(store, *ids.values())
    assert logged == {ids["sent"]: [ok], ids["retry"]: [failed], ids["gone"]: [ok]}  # ...but its attempt is
    with store.read() as connection:
        finished = connection.execute(select(action_attempts.c.finished_ms)).scalars().all()
    assert set(finished) == {NOW + 2}


def test_cut_off_sends_end_unknown_with_an_attempt(store: StateStore) -> None:
    ids = schedule(store, new_job("a"), new_job("b"))
    with store.write() as connection:
        connection.execute(action_jobs.update().values(attempts=2, send_started_ms=NOW - 7))
        assert outbox.end_unknown(connection, [ids["a"]], NOW, UNKNOWN) == 1
        assert outbox.end_unknown(connection, [], NOW, UNKNOWN) == 0
    a = job(store, ids["a"])
    assert (a.status, a.next_ms, a.attempts, a.last_error, a.updated_ms) == ("unknown", None, 3, UNKNOWN, NOW)
    # Numbered by its place in the job's log (the first logged here), not by the job's count of 3.
    assert attempts(store, ids["a"], ids["b"]) == {
        ids["a"]: [Attempt(1, NOW - 7, "unknown", None, UNKNOWN, None)]
    }
    assert job(store, ids["b"]).status == "scheduled"


def test_release_frees_a_dead_workers_jobs(store: StateStore) -> None:
    ids = schedule(store, new_job("started"), new_job("not-started"), new_job("others"))
    with store.write() as connection:
        outbox.claim(connection, "dead", NOW, NOW + 1_000, 2)
        outbox.mark_started(connection, [ids["started"]], "dead", NOW)
        outbox.claim(connection, "alive", NOW, NOW + 1_000, 2)
    with store.write() as connection:
        assert outbox.release(connection, "dead", NOW + 5, UNKNOWN) == (1, 1)
    started, not_started = job(store, ids["started"]), job(store, ids["not-started"])
    assert (started.status, started.last_error) == ("unknown", UNKNOWN)
    assert (not_started.status, not_started.next_ms, not_started.updated_ms) == (
        "scheduled",
        NOW + 5,
        NOW + 5,
    )
    assert (job(store, ids["others"]).status, job(store, ids["others"]).lease_owner) == ("sending", "alive")
    with store.write() as connection:
        assert outbox.release(connection, "dead", NOW + 6, UNKNOWN) == (0, 0)


def test_the_first_and_last_time_a_job_wants_looking_at(store: StateStore) -> None:
    with store.read() as connection:
        assert (outbox.next_due_ms(connection), outbox.last_due_ms(connection)) == (None, None)
    schedule(store, new_job("a", due=NOW + 5), new_job("b", due=NOW + 9, action=1))
    with store.read() as connection:
        assert (outbox.next_due_ms(connection), outbox.last_due_ms(connection)) == (NOW + 5, NOW + 9)
    with store.write() as connection:  # final jobs no longer count
        outbox.cancel(connection, 1, "f", [(0, 0), (0, 1)], "cancelled", NOW)
    with store.read() as connection:
        assert (outbox.next_due_ms(connection), outbox.last_due_ms(connection)) == (None, None)
    schedule(store, new_job("d", due=NOW + 3, step=1), new_job("e", due=NOW + 7, step=1))
    with store.read() as connection:
        assert (outbox.next_due_ms(connection), outbox.last_due_ms(connection)) == (NOW + 3, NOW + 7)


def add_instance(store: StateStore, instance_id: int, model: str, *ids: str) -> None:
    with store.write() as connection:
        connection.execute(
            insert(instances).values(
                id=instance_id,
                model=model,
                primary_id=ids[0],
                properties="{}",
                created_ms=NOW,
                updated_ms=NOW,
            )
        )
        connection.execute(
            insert(instance_ids),
            [{"model": model, "id_text": id_, "instance_id": instance_id} for id_ in ids],
        )


def test_the_delivery_log_filters_and_pages_newest_first(store: StateStore) -> None:
    add_instance(store, 1, "customer", "c1", "shared")
    add_instance(store, 2, "organization", "o1", "shared")
    ids = schedule(
        store,
        new_job("c1-a", instance_id=1),
        new_job("c1-b", instance_id=1, funnel="g"),
        new_job("o1-a", instance_id=2),
        new_job("c1-c", instance_id=1, step=1),
    )
    with store.write() as connection:
        connection.execute(
            action_jobs.update().where(action_jobs.c.instance_id == 2).values(model="organization")
        )
        connection.execute(action_jobs.update().where(action_jobs.c.key == "c1-b").values(status="dead"))

    def keys(where: JobFilter, limit: int = 10, offset: int = 0) -> tuple[int, list[str]]:
        with store.read() as connection:
            found = outbox.list_jobs(connection, where, limit=limit, offset=offset)
            return outbox.count_jobs(connection, where), [stored.key for stored in found]

    assert keys(JobFilter()) == (4, ["c1-c", "o1-a", "c1-b", "c1-a"])
    assert keys(JobFilter(), limit=2, offset=1) == (4, ["o1-a", "c1-b"])
    assert keys(JobFilter(status="dead")) == (1, ["c1-b"])
    assert keys(JobFilter(funnel="f")) == (3, ["c1-c", "o1-a", "c1-a"])
    assert keys(JobFilter(model="organization")) == (1, ["o1-a"])
    assert keys(JobFilter(id="shared")) == (4, ["c1-c", "o1-a", "c1-b", "c1-a"])  # any model's id
    assert keys(JobFilter(id="shared", model="customer")) == (3, ["c1-c", "c1-b", "c1-a"])
    assert keys(JobFilter(id="c1", funnel="f", status="scheduled")) == (2, ["c1-c", "c1-a"])
    assert keys(JobFilter(id="nobody")) == (0, [])
    with store.read() as connection:
        assert outbox.find_job(connection, max(ids.values()) + 1) is None
        assert sorted(outbox.jobs_and_primary_ids(connection)) == sorted(
            (job(store, ids[key]), primary)
            for key, primary in [("c1-a", "c1"), ("c1-b", "c1"), ("o1-a", "o1"), ("c1-c", "c1")]
        )


def test_an_instances_timeline_pages_by_creation_then_id(store: StateStore) -> None:
    ids = [schedule(store, new_job(f"j{n}", step=n))[f"j{n}"] for n in range(4)]
    schedule(store, new_job("someone-else", instance_id=2))
    with store.write() as connection:  # created at NOW, NOW, NOW + 10, NOW + 10
        for index, job_id in enumerate(ids):
            connection.execute(
                action_jobs.update()
                .where(action_jobs.c.id == job_id)
                .values(created_ms=NOW + 10 * (index // 2))
            )

    def page(before_ms: int, before_id: int | None, inclusive: bool, limit: int = 10) -> list[int]:
        with store.read() as connection:
            found = outbox.timeline_jobs(
                connection, 1, before_ms, before_id, inclusive=inclusive, limit=limit
            )
        return [stored.id for stored in found]

    newest_first = [ids[3], ids[2], ids[1], ids[0]]
    assert page(NOW + 10, None, inclusive=True) == newest_first
    assert page(NOW + 10, None, inclusive=True, limit=3) == newest_first[:3]
    assert page(NOW + 10, None, inclusive=False) == newest_first[2:]
    assert page(NOW + 10, ids[3], inclusive=False) == newest_first[1:]  # same time, a smaller id
    assert page(NOW, ids[1], inclusive=False) == [ids[0]]
    assert page(NOW, None, inclusive=False) == []


def test_attempts_come_in_the_order_they_were_made(store: StateStore) -> None:
    ids = schedule(store, new_job("a"), new_job("b"), new_job("c"))
    tries = [
        (ids["b"], Attempt(1, NOW, "failed", 500, "HTTP 500", None)),
        (ids["a"], Attempt(1, NOW, "sent", 200, None, "ok")),
    ]
    tries += [
        (ids["b"], Attempt(2, NOW + 1, "dead", 500, "HTTP 500", None)),
        (ids["b"], Attempt(1, NOW + 2, "sent", 200, None, None)),
    ]
    for job_id, attempt in tries:  # one at a time: the row ids order them
        with store.write() as connection:
            outbox.record(connection, [Outcome(job_id, "failed", NOW, None, None, attempt)], NOW, "w1")
    found = attempts(store, *ids.values())
    # The log numbers them by their place in the job's log, whatever the worker's count said (its third
    # came after a manual retry, which restarts the worker's count at 1: it was logged as 1 again once).
    numbered = [tries[0][1], tries[2][1], tries[3][1]._replace(attempt=3)]
    assert found == {ids["a"]: [tries[1][1]], ids["b"]: numbered}
    assert attempts(store) == {}


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        ("dead", True),
        ("failed", True),
        ("unknown", True),
        ("sent", False),
        ("sending", False),
        ("cancelled", False),
        ("scheduled", False),
    ],
)
def test_retry_schedules_only_retryable_jobs(store: StateStore, status: str, retried: bool) -> None:
    job_id = schedule(store, new_job("a"))["a"]
    changes: dict[str, Any] = {"status": status, "attempts": 3, "next_ms": None, "send_started_ms": NOW - 1}
    with store.write() as connection:
        connection.execute(action_jobs.update().where(action_jobs.c.id == job_id).values(**changes))
        assert outbox.retry(connection, job_id, NOW + 50) == status
        assert outbox.retry(connection, job_id + 1, NOW + 50) is None
    after = job(store, job_id)
    if retried:
        assert (after.status, after.next_ms, after.attempts, after.updated_ms) == (
            "scheduled",
            NOW + 50,
            0,
            NOW + 50,
        )
        assert after.send_started_ms is None
    else:
        assert (after.status, after.attempts, after.send_started_ms) == (status, 3, NOW - 1)


def test_the_claim_locks_its_rows_in_the_dialects_way() -> None:
    """One statement per dialect: on SQLite the claim's transaction holds the only write lock; on
    PostgreSQL the due rows are taken FOR UPDATE SKIP LOCKED, so concurrent claims take different rows."""
    on_sqlite = str(outbox._CLAIMS["sqlite"].compile(dialect=sqlite.dialect()))
    on_postgresql = str(outbox._CLAIMS["postgresql"].compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE" not in on_sqlite and on_sqlite.startswith("UPDATE action_jobs SET")
    assert "ORDER BY action_jobs.next_ms" in on_postgresql
    assert "FOR UPDATE SKIP LOCKED)" in on_postgresql and " RETURNING " in on_postgresql


def test_a_late_result_from_a_worker_whose_lease_another_took_over_changes_nothing(store: StateStore) -> None:
    """w1's lease ran out and w2 claimed the job again: w1's late `failed` must not overwrite the job w2
    now holds (its attempt is still logged), and w2's result is recorded."""
    ids = schedule(store, new_job("slow"))
    claim(store, "w1", now=NOW)
    assert [job.id for job in claim(store, "w2", now=NOW + 2_000)] == [ids["slow"]]  # w1's lease ended
    late = Attempt(1, NOW + 2_500, "failed", 503, "HTTP 503", None)
    ok = Attempt(1, NOW + 2_600, "sent", 200, None, "ok")
    with store.write() as connection:
        outbox.record(
            connection, [Outcome(ids["slow"], "failed", NOW + 60_000, "HTTP 503", None, late)], NOW + 3, "w1"
        )
    assert job(store, ids["slow"]).status == "sending"  # still w2's
    with store.write() as connection:
        outbox.record(
            connection, [Outcome(ids["slow"], "sent", None, None, '{"url":"u"}', ok)], NOW + 4, "w2"
        )
    assert (job(store, ids["slow"]).status, job(store, ids["slow"]).attempts) == ("sent", 1)
    assert attempts(store, ids["slow"]) == {ids["slow"]: [late, ok._replace(attempt=2)]}  # the log's second
