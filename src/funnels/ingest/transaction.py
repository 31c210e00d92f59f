"""One ingest transaction: new events into the event log with everything automation makes of them.

How it works: in the caller's write transaction, the events whose ids the log already holds are answered
`duplicate` (dedup by event id, for the log's dedup window); the others go through automation's `Batch` in
order (identify, the step rule, progress rows, action jobs) and are appended to the log, so an
acknowledged event and the actions it causes commit together or not at all. A repeated id within the
batch is a duplicate of its first occurrence, unless that one was refused (an identify over a cap is
neither applied nor logged: the client gets an error and may send it again changed). Without a config,
events are logged and answered `off`.
"""

from __future__ import annotations

from collections.abc import Sequence

from funnels.automation.engine import Batch, Outcome, Signal
from funnels.automation.steprule import Plan
from funnels.events import Event
from funnels.store import eventlog
from funnels.store.state import Connection


def apply_signals(
    connection: Connection, plan: Plan | None, signals: Sequence[Signal], now_ms: int
) -> list[Outcome]:
    """Log the new events and run automation for each, in order, in the caller's transaction; one outcome
    per signal. Every new event is logged whatever automation makes of it (analytics keeps them all); an
    `/api/v1` event for a known instance carries the instance's primary id as its user key, so analytics
    counts each instance once."""
    seen = eventlog.known_event_ids(connection, [signal.event.event_id for signal in signals])
    fresh = [signal for signal in signals if signal.event.event_id not in seen]
    batch = Batch(connection, plan, now_ms, fresh) if plan is not None else None
    outcomes: list[Outcome] = []
    logged: list[Event] = []
    for signal in signals:
        event = signal.event
        if event.event_id in seen:
            outcomes.append(
                Outcome(event.event_id, event.event, "duplicate", reason="this event id was already received")
            )
            continue
        if batch is None:
            outcome = Outcome(
                event.event_id, event.event, "off", reason="automation is off: the server has no config"
            )
        else:
            outcome = batch.process(signal)
        outcomes.append(outcome)
        if not outcome.refused:
            seen.add(event.event_id)
            logged.append(event)
    if batch is not None:
        batch.flush()
    eventlog.append(connection, logged)
    return outcomes
