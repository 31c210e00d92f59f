"""One ingest transaction on a real state store: dedup by event id (against the log and within the batch),
automation's outcome for each new event, and the log holding every new event that was not refused."""

from __future__ import annotations

from pathlib import Path

from funnels.automation.engine import Signal
from funnels.automation.identity import MAX_INSTANCE_IDS, Identify
from funnels.automation.steprule import Plan
from funnels.config import validate_config
from funnels.events import Event
from funnels.ingest.transaction import apply_signals
from funnels.store import eventlog
from funnels.store.state import StateStore

NOW = 1_775_001_600_000
PLAN = Plan.compile(
    validate_config(
        {
            "models": [{"name": "customer"}],
            "funnels": [
                {
                    "id": "onboarding",
                    "forModels": "customer",
                    "steps": [
                        {
                            "event": "sign_up",
                            "actions": {"type": "webhook", "args": {"url": "https://x.example"}},
                        }
                    ],
                }
            ],
        },
        environ={},
    )
)


def event(event_id: str, name: str) -> Event:
    return Event(event_id=event_id, type="track", event=name, user_key="c1", ts_ms=NOW, received_ms=NOW)


def track(event_id: str, name: str = "sign_up") -> Signal:
    return Signal(event(event_id, name), model="customer", ids=("c1",), explicit=True)


def identify(event_id: str, ids: tuple[str, ...] = ("c1",)) -> Signal:
    return Signal(event(event_id, "identify"), model="customer", ids=ids, identify=Identify("customer", ids))


def logged(state: StateStore) -> list[str]:
    with state.read() as connection:
        return [row.event.event_id for row in eventlog.events_after(connection, 0, 100)]


def test_new_events_are_applied_and_logged_and_repeated_ids_are_duplicates(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.sqlite3")
    try:
        with state.write() as connection:
            first = apply_signals(connection, PLAN, [identify("i1"), track("e1"), track("e1")], NOW)
        with state.write() as connection:
            again = apply_signals(connection, PLAN, [track("e1"), track("e2", "page_view")], NOW)
        assert [outcome.status for outcome in first] == ["processed", "processed", "duplicate"]
        assert [step["step"] for step in first[1].satisfied] == [1]
        assert [outcome.status for outcome in again] == ["duplicate", "processed"]
        assert again[1].satisfied == []
        assert logged(state) == ["i1", "e1", "e2"]
    finally:
        state.close()


def test_a_refused_identify_is_not_logged_and_its_id_may_come_again_in_the_batch(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.sqlite3")
    too_many = tuple(f"id{n}" for n in range(MAX_INSTANCE_IDS + 1))
    try:
        with state.write() as connection:
            outcomes = apply_signals(connection, PLAN, [identify("i1", too_many), identify("i1")], NOW)
        assert [outcome.status for outcome in outcomes] == ["refused", "processed"]
        assert logged(state) == ["i1"]
    finally:
        state.close()


def test_without_a_config_events_are_logged_and_automation_is_off(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.sqlite3")
    try:
        with state.write() as connection:
            outcomes = apply_signals(connection, None, [track("e1"), track("e1")], NOW)
        assert [outcome.status for outcome in outcomes] == ["off", "duplicate"]
        assert logged(state) == ["e1"]
    finally:
        state.close()
