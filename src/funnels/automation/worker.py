"""The worker: claims due action jobs, renders them, sends them through their channel, records the outcome.

How it works: a claim is one write transaction that takes the due jobs with the smallest `next_ms` (one
range scan of a partial index, however many jobs are pending) and marks them `sending` with a lease:
their `next_ms` becomes the lease's expiry and `lease_owner` this worker's name. A worker that dies
mid-send leaves the job to be claimed again when the lease expires (or at once: `release_jobs`, which
`funnels serve` runs when its delivery process dies). What happens then is the action's guarantee:
- at-least-once (the default for webhooks): the job is sent again, with the same idempotency key, so at
  worst the receiver sees a duplicate it can drop;
- at-most-once (slack, email, sms): just before its send, the worker marks the job `send_started_ms` (one
  transaction for the round's at-most-once jobs; a round of at-least-once jobs writes nothing more). A
  marked job whose worker died may have reached the receiver: it ends `unknown`, never sent again by
  itself (a manual retry sends it once more). An unmarked one had not started and is sent normally.
Before sending, a job whose `unless` step the instance has reached is cancelled,
and one due outside its quiet hours waits for the window (neither counts as an attempt); then a job in its
action's holdout (`steprule.held_out`) ends `held_out`, never sent, so `unless` and quiet hours treat the
held-out and the treated alike and the two groups stay comparable (an email or SMS to an instance that
unsubscribed from it ends `suppressed` just before: in neither group); then a first attempt that would exceed a
frequency cap (`limits`, `caps_reached`) ends `capped`, never sent (a retry is the same message: not
checked again). Outcomes:
`sent`; `failed` (a retryable failure: network, timeout, 429, 5xx) with the next attempt after an
exponential backoff with jitter, or the receiver's `Retry-After` if longer; `dead` when attempts are
exhausted, the receiver refused for good (other 4xx) or the action cannot be rendered.

Several workers may run against one state store (`funnels worker`): claims are transactions, so a job is
held by one worker at a time.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from funnels.automation.consent import UnsubscribeTokens, action_topic, link
from funnels.automation.steprule import HOLDOUT_BUCKETS, held_out, holdout_bucket
from funnels.automation.templates import TemplateRenderError, render_action_args
from funnels.background import BackgroundLoop
from funnels.channels import ACTION_TYPES
from funnels.channels.base import Channel, DeliveryRequest, DeliveryResult, Redactor, Unsubscribe, redact
from funnels.channels.network import Network, guarded_client
from funnels.clock import Clock
from funnels.config import SUBSCRIBABLE, DeliveryPolicy, Limit
from funnels.store import outbox, subscriptions
from funnels.store.identity import Instance, instances_with_ids
from funnels.store.notify import WORKER_POLL_S, JobListener
from funnels.store.progress import reached_steps
from funnels.store.state import Connection, StateStore

log = logging.getLogger(__name__)

Dispatch = Callable[[Channel, BaseModel, BaseModel, DeliveryRequest], DeliveryResult]
UTC_ZONE = ZoneInfo("UTC")
AT_MOST_ONCE = "at-most-once"
UNKNOWN_ERROR = (
    "outcome unknown: the worker stopped during the send (at-most-once: not sent again by itself; "
    "retry to send it once more)"
)


def release_jobs(state: StateStore, owner: str, now_ms: int) -> tuple[int, int]:
    """The jobs a worker that has died still holds, released at once instead of when their lease ends:
    those whose send had not started are due now, at-most-once ones whose send had started end `unknown`.
    Returns (released, unknown). Only for a worker known to be dead: a live one would send twice."""
    with state.write() as connection:
        return outbox.release(connection, owner, now_ms, UNKNOWN_ERROR)


def send(channel: Channel, args: BaseModel, settings: BaseModel, request: DeliveryRequest) -> DeliveryResult:
    """The real dispatch: the channel's own delivery function."""
    return channel.deliver(args, settings, request)


@dataclass(frozen=True)
class Job:
    """A claimed job with everything its delivery needs."""

    id: int
    key: str
    funnel_id: str
    step_index: int
    step_event: str
    action_type: str
    model: str
    event: str
    event_properties: dict[str, Any]
    attempts: int
    spec: dict[str, Any]
    instance: Instance | None
    ids: tuple[str, ...]
    reached: frozenset[str]  # step events the instance has satisfied in this funnel
    capped: str | None = None  # the frequency cap a first attempt would exceed (`caps_reached`)
    suppressed: str | None = None  # the opt-out that stops it (an email or SMS to an unsubscribed instance)

    @property
    def at_most_once(self) -> bool:
        guarantee = self.spec.get("guarantee")  # absent in specs stored before guarantees existed
        if guarantee is None:
            channel = ACTION_TYPES.get(self.action_type)
            guarantee = channel.guarantee if channel else "at-least-once"
        return bool(guarantee == AT_MOST_ONCE)


@dataclass(frozen=True)
class Send:
    """A job rendered and validated, ready for its channel."""

    job: Job
    channel: Channel
    args: BaseModel
    rendered: dict[str, Any]
    unsubscribe: Unsubscribe | None = None  # the recipient's way out (`Worker.unsubscribe`)


@dataclass(frozen=True)
class Result:
    job_id: int
    # sent, failed, dead, cancelled, held_out, capped, scheduled (waiting for quiet hours), unknown (an
    # at-most-once send that may have reached the receiver: no answer came); `lost`: the job's lease went to
    # another worker before its at-most-once send started, so this worker neither sends nor records it
    status: str
    next_ms: int | None = None
    error: str | None = None
    rendered: dict[str, Any] | None = None
    delivery: DeliveryResult | None = None  # set when an attempt was made
    started_ms: int = 0
    attempt: int = 0  # which attempt `delivery` was (counting from 1 since the job's last manual retry)


def backoff_ms(attempt: int, policy: DeliveryPolicy, rng: random.Random, retry_after_s: float | None) -> int:
    """Exponential backoff with "equal jitter" (half fixed, half random); a longer Retry-After wins."""
    ceiling = min(
        policy.backoff_max.total_seconds(), policy.backoff_base.total_seconds() * 2 ** (attempt - 1)
    )
    delay = rng.uniform(ceiling / 2, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, 86_400.0))
    return int(delay * 1000)


def next_window_ms(now_ms: int, timezone: str | None, not_before: int | None, not_after: int | None) -> int:
    """`now_ms` if it is inside the quiet-hours window (minutes of the day in `timezone`), else when the
    next window opens. A window whose start is after its end spans midnight."""
    if not_before is None and not_after is None:
        return now_ms
    try:
        zone = ZoneInfo(timezone) if isinstance(timezone, str) and timezone else UTC_ZONE
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC_ZONE
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    minute = local.hour * 60 + local.minute
    start = 0 if not_before is None else not_before
    end = 24 * 60 if not_after is None else not_after
    inside = start <= minute < end if start <= end else (minute >= start or minute < end)
    if inside:
        return now_ms
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    opening = day + timedelta(minutes=start)
    if opening <= local:
        opening += timedelta(days=1)
    # Wall-clock arithmetic in the zone, then back to UTC: a window opens at 09:00 local across DST.
    opening = opening.replace(tzinfo=None).replace(tzinfo=zone)
    return int(opening.timestamp() * 1000)


def template_context(job: Job, unsubscribe_url: str = "") -> dict[str, Any]:
    instance = job.instance
    return {
        "unsubscribe_url": unsubscribe_url,
        "modelProperties": instance.properties if instance else {},
        "displayName": (instance.display_name or "") if instance else "",
        "model": job.model,
        "funnel": job.funnel_id,
        "event": job.event,
        "eventProperties": job.event_properties,
        "ids": list(job.ids),
        "step": job.step_event,
        "stepNumber": job.step_index + 1,
    }


def _error_of(delivery: DeliveryResult) -> str:
    if delivery.error:
        return delivery.error
    return f"HTTP {delivery.status_code}" if delivery.status_code else "delivery failed"


class Worker(BackgroundLoop):
    """Claims and delivers due jobs; `run_until_idle` for tests and replay, `start` for a background thread."""

    thread_name = "funnels-worker"

    def __init__(
        self,
        state: StateStore,
        policy: Callable[[], tuple[DeliveryPolicy, dict[str, BaseModel]]],
        clock: Clock,
        *,
        concurrency: int = 16,
        poll_s: float = WORKER_POLL_S,
        min_interval_s: float = 0.005,
        dispatch: Dispatch = send,
        rng: random.Random | None = None,
        owner: str | None = None,
        allow: Callable[[], Sequence[Network]] = tuple,
        public_url: str | None = None,
    ) -> None:
        self.state = state
        # Where recipients reach the server: the base of unsubscribe links (none without it).
        self.public_url = public_url
        self.tokens = UnsubscribeTokens(state, clock)
        self.policy = policy  # the current config's delivery policy and channel settings (reloadable)
        self.clock = clock
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.min_interval_s = min_interval_s  # between the starts of two rounds (claim and record)
        self.dispatch = dispatch
        self.rng = rng or random.Random()
        # The name its leases carry (`release_jobs`): given by `funnels serve` to its delivery process.
        self.owner = owner or f"worker-{os.getpid()}-{secrets.token_hex(6)}"
        # Public addresses only, plus the config's `network.allow` (`allow` is read at each connection).
        self.http: httpx.Client = guarded_client(allow)
        self._specs: dict[str, dict[str, Any]] = {}
        self._next_due: int | None = None  # what the last claim that found nothing read (`_idle_wait_s`)
        # PostgreSQL: woken when any process, on any machine, schedules a job (polling stays the fallback).
        self._listener = JobListener(state, self.wake)
        super().__init__()

    def start(self) -> None:
        self._listener.start()
        super().start()

    def stop(self) -> None:
        self._listener.stop()
        super().stop()

    # --- claim ---------------------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Job]:
        """Take up to `limit` due jobs (oldest due first) and lease them to this worker."""
        with self.state.read() as connection:  # most polls find nothing: don't take the writer for them
            self._next_due = outbox.next_due_ms(connection)
        if self._next_due is None or self._next_due > self.clock.now_ms():
            return []
        with self.state.write() as connection:
            return self._claim(connection, limit)

    def record_and_claim(self, results: Sequence[Result], limit: int) -> list[Job]:
        """`record` the results and `claim` up to `limit` jobs in one write transaction."""
        if not results:
            return self.claim(limit) if limit > 0 else []
        with self.state.write() as connection:
            self._record(connection, results)
            return self._claim(connection, limit) if limit > 0 else []

    def _claim(self, connection: Connection, limit: int) -> list[Job]:
        now = self.clock.now_ms()
        policy, _settings = self.policy()
        lease_ms = int(policy.timeout.total_seconds() * 2000) + 5_000
        rows = outbox.claim(connection, self.owner, now, now + lease_ms, limit)
        cut_off = [row.id for row in rows if row.send_started_ms is not None]
        if cut_off:  # at-most-once sends whose worker died (the lease ran out): not sent again
            outbox.end_unknown(connection, cut_off, now, UNKNOWN_ERROR)
            rows = [row for row in rows if row.send_started_ms is None]
        if not rows:  # the worker waits next: for how long, read in this transaction
            self._next_due = outbox.next_due_ms(connection)
            return []
        return self._jobs(connection, rows)

    def _jobs(self, connection: Connection, rows: Sequence[outbox.StoredJob]) -> list[Job]:
        missing = {row.spec_id for row in rows} - set(self._specs)
        if missing:
            for spec_id, spec in outbox.specs(connection, missing).items():
                self._specs[spec_id] = orjson.loads(spec)
        instance_keys = list({row.instance_id for row in rows})
        instances = instances_with_ids(connection, instance_keys)
        reached: dict[tuple[int, str], set[str]] = {}
        steps: dict[tuple[int, str, int], str] = {}
        for instance_id, funnel_id, step_index, event in reached_steps(connection, instance_keys):
            reached.setdefault((instance_id, funnel_id), set()).add(event)
            steps[(instance_id, funnel_id, step_index)] = event
        suppressed = self._suppressed(connection, rows)
        jobs = []
        for row in rows:
            instance, ids = instances.get(row.instance_id, (None, []))
            jobs.append(
                Job(
                    id=row.id,
                    key=row.key,
                    funnel_id=row.funnel_id,
                    step_index=row.step_index,
                    step_event=steps.get((row.instance_id, row.funnel_id, row.step_index), row.event),
                    action_type=row.action_type,
                    model=row.model,
                    event=row.event,
                    event_properties=orjson.loads(row.event_properties),
                    attempts=row.attempts,
                    spec=self._specs[row.spec_id],
                    instance=instance,
                    ids=tuple(ids),
                    reached=frozenset(reached.get((row.instance_id, row.funnel_id), ())),
                    suppressed=suppressed.get(row.id),
                )
            )
        # Claimed together, they are all `sending`, and a cap counts those before each job; the ones that
        # end without a message (cancelled, waiting for quiet hours, suppressed, held out) are not counted.
        now = self.clock.now_ms()
        silent = {job.id for job in jobs if self._silent(job, now)}
        caps = self._caps(connection, rows, silent)
        return [replace(job, capped=caps[job.id]) if job.id in caps else job for job in jobs]

    def _suppressed(self, connection: Connection, rows: Sequence[outbox.StoredJob]) -> dict[int, str]:
        """Which of these claimed jobs are emails or SMS to an instance that unsubscribed from the channel or
        the action's topic (its funnel's id unless it names one); transactional actions never are."""
        candidates = [
            row
            for row in rows
            if row.action_type in SUBSCRIBABLE and not self._specs[row.spec_id].get("transactional")
        ]
        if not candidates:
            return {}
        opted_out = subscriptions.opt_outs(connection, {row.instance_id for row in candidates})
        found: dict[int, str] = {}
        for row in candidates:
            topic = self._specs[row.spec_id].get("topic") or row.funnel_id
            keys = {row.action_type, f"{row.action_type}:{topic}"}
            hit = next((out for out in opted_out.get(row.instance_id, ()) if out.topic in keys), None)
            if hit is not None:
                found[row.id] = f"suppressed: unsubscribed from {hit.topic!r} ({hit.source})"
        return found

    def _caps(
        self, connection: Connection, rows: Sequence[outbox.StoredJob], silent: Collection[int] = ()
    ) -> dict[int, str]:
        """Which of these claimed jobs a first attempt would put over a frequency cap (job id → why); `silent`:
        those of them that will end without sending anything, not counted as messages."""
        policy, _settings = self.policy()
        first = [row for row in rows if row.attempts == 0 and row.id not in silent]  # a retry is not new
        limits = [limit for limit in policy.limits if any(row.action_type == limit.channel for row in first)]
        if not limits:
            return {}
        now = self.clock.now_ms()
        longest = max(int(limit.per.total_seconds() * 1000) for limit in limits)
        messages = outbox.recent_messages(
            connection, {row.instance_id for row in first}, {limit.channel for limit in limits}, now - longest
        )
        return caps_reached(first, limits, [m for m in messages if m.id not in silent], now)

    # --- one job -------------------------------------------------------------------------------------

    def handle(self, job: Job) -> Result:
        """Decide and, if due, deliver one claimed job (`prepare`, `mark_started`, `send`). Never raises."""
        prepared = self.prepare(job)
        if isinstance(prepared, Result):
            return prepared
        if not self.mark_started([prepared]):
            return Result(job.id, "lost")
        return self.send(prepared)

    def prepare(self, job: Job) -> Result | Send:
        """A claimed job's outcome without sending (cancelled, waiting for quiet hours, not renderable), or
        what to send. Never raises."""
        now = self.clock.now_ms()
        try:
            return self._prepare(job, now)
        except Exception as error:  # a bug must not kill the worker or lose the job: retry it later
            return _internal_error(job, now, error)

    def mark_started(self, sends: Sequence[Send]) -> list[Send]:
        """Mark the at-most-once sends as started, in one transaction (none when there are none); returns
        the sends to make: every at-least-once one and the at-most-once ones this worker still holds."""
        marking = [ready.job.id for ready in sends if ready.job.at_most_once]
        if not marking:
            return list(sends)
        with self.state.write() as connection:
            marked = outbox.mark_started(connection, marking, self.owner, self.clock.now_ms())
        return [ready for ready in sends if not ready.job.at_most_once or ready.job.id in marked]

    def send(self, ready: Send) -> Result:
        """Deliver a prepared job through its channel. Never raises."""
        now = self.clock.now_ms()
        try:
            return self._send(ready, now)
        except Exception as error:
            return _internal_error(ready.job, now, error)

    def _stopped(self, job: Job, now: int) -> Result | None:
        """The outcome of a due job that sends nothing now whatever the caps say: cancelled by `unless`,
        waiting for quiet hours, suppressed, held out (in this order); None for one that would go."""
        spec = job.spec
        reached = sorted(set(spec["unless"]) & job.reached)
        if reached:
            return Result(job.id, "cancelled", error=f"cancelled: {reached[0]!r} was reached first")
        timezone = job.instance.properties.get("timezone") if job.instance else None
        opening = next_window_ms(now, timezone, spec["not_before_minute"], spec["not_after_minute"])
        if opening > now:
            return Result(job.id, "scheduled", next_ms=opening)
        if job.suppressed:  # before the holdout: an unsubscribed instance is in neither group
            return Result(job.id, "suppressed", error=job.suppressed)
        holdout_bp = int(spec.get("holdout_bp", 0))  # absent in specs of actions without a holdout
        if held_out(job.key, holdout_bp):
            note = (
                f"held out: bucket {holdout_bucket(job.key):,} of {HOLDOUT_BUCKETS:,} is in the action's "
                f"{holdout_bp / 100:g}% holdout"
            )
            return Result(job.id, "held_out", error=note)
        return None

    def _silent(self, job: Job, now: int) -> bool:
        """Whether `_stopped` ends the job without a message; False if it raises (`prepare` reports that)."""
        try:
            return self._stopped(job, now) is not None
        except Exception:
            return False

    def _prepare(self, job: Job, now: int) -> Result | Send:
        spec = job.spec
        stopped = self._stopped(job, now)
        if stopped is not None:
            return stopped
        if job.capped:
            return Result(job.id, "capped", error=job.capped)
        channel = ACTION_TYPES.get(job.action_type)
        if channel is None:
            return Result(job.id, "dead", error=f"unknown action type {job.action_type!r}")
        way_out = self.unsubscribe(job)
        url = way_out.url if way_out and way_out.url else ""
        try:
            rendered = render_action_args(spec["args"], template_context(job, url), channel.args)
        except TemplateRenderError as error:
            return Result(job.id, "dead", error=f"template: {error}")
        try:
            args = channel.args.model_validate(rendered)
        except ValidationError as error:
            problems = "; ".join(
                f"args.{'.'.join(str(p) for p in item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
                for item in error.errors()
            )
            shown = redact(channel.args, rendered)  # secrets are never stored, on any path
            return Result(job.id, "dead", error=f"after rendering: {problems}", rendered=shown)
        return Send(job, channel, args, rendered, way_out)

    def unsubscribe(self, job: Job) -> Unsubscribe | None:
        """A non-transactional email's or SMS's way out: a token for its instance and topic, and the link
        on the public URL that carries it (None without a public URL). None for any other job."""
        if job.action_type not in SUBSCRIBABLE or job.spec.get("transactional") or job.instance is None:
            return None
        token = self.tokens.make(
            job.instance.id, action_topic(job.action_type, job.spec.get("topic"), job.funnel_id)
        )
        return Unsubscribe(link(self.public_url, token) if self.public_url else None, token)

    def _send(self, ready: Send, now: int) -> Result:
        job, channel, args, rendered = ready.job, ready.channel, ready.args, ready.rendered
        policy, settings = self.policy()
        request = DeliveryRequest(
            idempotency_key=job.key,
            timeout_s=policy.timeout.total_seconds(),
            http=self.http,
            now_ms=now,
            unsubscribe=ready.unsubscribe,
        )
        channel_settings = settings.get(job.action_type) or channel.settings.model_validate({})
        redactor = Redactor.of(channel.args, rendered, channel_settings)
        delivery = redactor.result(self.dispatch(channel, args, channel_settings, request))
        attempt = job.attempts + 1
        shown = delivery.sent or redactor.args(rendered)
        if delivery.ok:
            return Result(job.id, "sent", rendered=shown, delivery=delivery, started_ms=now, attempt=attempt)
        problem = _error_of(delivery)
        if delivery.maybe_delivered and job.at_most_once:  # the receiver may have it: never again by itself
            return Result(
                job.id,
                "unknown",
                error=f"{problem} (outcome unknown: at-most-once, not sent again by itself)",
                rendered=shown,
                delivery=delivery,
                started_ms=now,
                attempt=attempt,
            )
        if delivery.retryable and attempt < policy.max_attempts:
            retry_at = self.clock.now_ms() + backoff_ms(attempt, policy, self.rng, delivery.retry_after_s)
            return Result(
                job.id,
                "failed",
                next_ms=retry_at,
                error=problem,
                rendered=shown,
                delivery=delivery,
                started_ms=now,
                attempt=attempt,
            )
        if delivery.retryable:
            problem = f"{problem} (gave up after {attempt} attempts)"
        return Result(
            job.id, "dead", error=problem, rendered=shown, delivery=delivery, started_ms=now, attempt=attempt
        )

    # --- record --------------------------------------------------------------------------------------

    def record(self, results: Sequence[Result]) -> None:
        """Write outcomes in one transaction (one statement per kind of row); a job is only updated while
        it is still leased (`sending`), but every attempt made is logged."""
        if results:
            with self.state.write() as connection:
                self._record(connection, results)

    def _record(self, connection: Connection, results: Sequence[Result]) -> None:
        outcomes = [_outcome(result) for result in results if result.status != "lost"]
        outbox.record(connection, outcomes, self.clock.now_ms(), self.owner)

    # --- loops ---------------------------------------------------------------------------------------

    def run_until_idle(self, max_rounds: int = 10_000) -> int:
        """Deliver every job due now, synchronously (tests, replay); returns how many were handled."""
        handled = 0
        for _ in range(max_rounds):
            jobs = self.claim(self.concurrency)
            if not jobs:
                break
            prepared = [self.prepare(job) for job in jobs]
            results = [item for item in prepared if isinstance(item, Result)]
            sends = self.mark_started([item for item in prepared if isinstance(item, Send)])
            self.record(results + [self.send(ready) for ready in sends])
            handled += len(jobs)
        return handled

    def next_due_ms(self) -> int | None:
        with self.state.read() as connection:
            return outbox.next_due_ms(connection)

    def close(self) -> None:
        self.stop()
        self.http.close()

    def _idle_wait_s(self) -> float:
        """How long to wait when the last claim found nothing: until the next due time that claim read
        (`_next_due`), at most `poll_s` (a job scheduled meanwhile wakes the worker, or the poll finds it)."""
        due = self._next_due
        if due is None:
            return self.poll_s
        return min(self.poll_s, max(0.0, (due - self.clock.now_ms()) / 1000))

    def _run(self) -> None:
        """Keep up to `concurrency` sends in flight. A finished send and a newly due job both set `_wake`;
        each round records every outcome that has come in and claims as many jobs as there are free slots,
        in one transaction. Rounds start at most every `min_interval_s`: an idle worker starts one at
        once, a busy one lets jobs and outcomes gather for the rest of the interval, so a claim and a
        record serve several jobs (a claim of one job costs ~0.7 ms of CPU, of four ~0.25 ms each; 20 ms
        instead of 5 saved CPU on PostgreSQL but lengthened the tail on SQLite: docs/benchmarks.md). The
        claimed jobs are prepared (rendered) here; the round's at-most-once sends are marked started in
        one more transaction (`mark_started`, none for a round without them) before any send begins."""
        outcomes: queue.SimpleQueue[Result] = queue.SimpleQueue()
        inflight = 0
        last_round = -self.min_interval_s

        def deliver(ready: Send) -> None:
            outcomes.put(self.send(ready))  # `send` never raises
            self._wake.set()

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="funnels-send") as pool:
            while not self._stop.is_set() or inflight:
                if not self._stop.is_set():
                    self._stop.wait(last_round + self.min_interval_s - time.monotonic())
                last_round = time.monotonic()
                self._wake.clear()  # before looking: a wake from here on ends the wait below at once
                try:
                    finished = _drain(outcomes)
                    inflight -= len(finished)
                    free = 0 if self._stop.is_set() else self.concurrency - inflight
                    jobs = self.record_and_claim(finished, free)
                    prepared = [self.prepare(job) for job in jobs]
                    # At-most-once sends are marked started (one transaction) before any of them starts.
                    sends = self.mark_started([item for item in prepared if isinstance(item, Send)])
                    for item in prepared:
                        if isinstance(item, Result):
                            outcomes.put(item)
                    for ready in sends:
                        pool.submit(deliver, ready)
                    inflight += sum(isinstance(item, Result) for item in prepared) + len(sends)
                    if not jobs:
                        self._wake.wait(self._idle_wait_s() if not inflight else self.poll_s)
                except Exception:  # the store was unavailable: leased jobs are claimed again later
                    log.exception("the action worker failed; retrying in a second")
                    time.sleep(1.0)


def caps_reached(
    jobs: Sequence[outbox.StoredJob], limits: Sequence[Limit], messages: Sequence[outbox.Message], now_ms: int
) -> dict[int, str]:
    """Which of `jobs` (first attempts, being sent now) would exceed a limit: for each limit of its channel
    (and funnel), the instance's messages sent within `per` before now, plus those being sent that come
    before the job (by due time, then id: so of several due at once the first `max` go), reach `max`."""
    capped: dict[int, str] = {}
    for job in jobs:
        for limit in limits:
            if limit.channel != job.action_type or limit.funnel not in (None, job.funnel_id):
                continue
            since = now_ms - int(limit.per.total_seconds() * 1000)
            count = sum(
                message.instance_id == job.instance_id
                and message.action_type == limit.channel
                and limit.funnel in (None, message.funnel_id)
                and message.id != job.id
                and (
                    (message.status == "sent" and (message.sent_ms or 0) >= since)
                    or (message.status == "sending" and (message.due_ms, message.id) < (job.due_ms, job.id))
                )
                for message in messages
            )
            if count >= limit.max:
                scope = f" of funnel {limit.funnel!r}" if limit.funnel else ""
                capped[job.id] = (
                    f"capped: {count} {limit.channel} message(s){scope} to this instance within "
                    f"{_duration(limit.per)} (limit {limit.max})"
                )
                break
    return capped


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _outcome(result: Result) -> outbox.Outcome:
    """A result as the outbox records it, with its delivery attempt if one was made."""
    delivery = result.delivery
    attempt = None
    if delivery is not None:
        error = None if delivery.ok else _error_of(delivery)
        attempt = outbox.Attempt(
            result.attempt, result.started_ms, result.status, delivery.status_code, error, delivery.response
        )
    rendered = None if result.rendered is None else orjson.dumps(result.rendered).decode()
    return outbox.Outcome(result.job_id, result.status, result.next_ms, result.error, rendered, attempt)


def _internal_error(job: Job, now: int, error: Exception) -> Result:
    log.exception("action job %s failed unexpectedly", job.id)
    return Result(job.id, "failed", next_ms=now + 60_000, error=f"internal error: {error!r}")


def _drain(outcomes: queue.SimpleQueue[Result]) -> list[Result]:
    finished = []
    while True:
        try:
            finished.append(outcomes.get_nowait())
        except queue.Empty:
            return finished
