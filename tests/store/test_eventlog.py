"""The event log's rows: append (a known id skipped), dedup lookups, reads in sequence order, backlog, prune."""

from __future__ import annotations

import threading
import time

from funnels.events import Event
from funnels.store import eventlog
from funnels.store.state import StateStore


def event(event_id: str, received_ms: int = 1_000, name: str = "sign_up") -> Event:
    return Event(
        event_id=event_id,
        type="track",
        event=name,
        user_key="u1",
        ts_ms=received_ms - 5,
        received_ms=received_ms,
        properties={"plan": "pro", "n": 1},
    )


def test_appended_events_are_read_back_in_sequence_order_after_a_sequence_number(state: StateStore) -> None:
    with state.write() as connection:
        eventlog.append(connection, [event("a"), event("b")])
        eventlog.append(connection, [event("c")])
    with state.read() as connection:
        every = eventlog.events_after(connection, 0, 10)
        assert [row.event for row in every] == [event("a"), event("b"), event("c")]
        seqs = [row.seq for row in every]
        assert seqs == sorted(seqs)
        assert [row.event.event_id for row in eventlog.events_after(connection, seqs[0], 1)] == ["b"]
        assert eventlog.events_after(connection, seqs[-1], 10) == []
        assert eventlog.backlog(connection, seqs[0]) == 2
        assert eventlog.backlog(connection, seqs[-1]) == 0


def test_an_event_id_the_log_holds_is_skipped_and_the_first_kept(state: StateStore) -> None:
    with state.write() as connection:
        eventlog.append(connection, [event("a", name="first")])
        eventlog.append(connection, [event("a", name="again"), event("b")])
    with state.read() as connection:
        rows = eventlog.events_after(connection, 0, 10)
    assert [(row.event.event_id, row.event.event) for row in rows] == [("a", "first"), ("b", "sign_up")]


def test_known_event_ids_finds_the_ids_the_log_holds_across_chunks(state: StateStore) -> None:
    held = [f"e{i}" for i in range(0, 1_200, 2)]  # more than one IN list's worth (500)
    with state.write() as connection:
        eventlog.append(connection, [event(id_) for id_ in held])
    asked = [f"e{i}" for i in range(1_200)] + ["e0", "e0"]
    with state.read() as connection:
        assert eventlog.known_event_ids(connection, asked) == set(held)
        assert eventlog.known_event_ids(connection, []) == set()


def test_prune_deletes_only_shipped_events_older_than_the_cutoff(state: StateStore) -> None:
    with state.write() as connection:
        eventlog.append(connection, [event("old", 1_000), event("new", 9_000), event("unshipped-old", 1_000)])
    with state.read() as connection:
        shipped_through = eventlog.events_after(connection, 0, 10)[1].seq  # "old" and "new" are shipped
    with state.write() as connection:
        eventlog.prune(connection, through_seq=shipped_through, received_before_ms=5_000)
    with state.read() as connection:
        left = [row.event.event_id for row in eventlog.events_after(connection, 0, 10)]
        assert left == ["new", "unshipped-old"]
        assert eventlog.known_event_ids(connection, ["old", "new"]) == {"new"}


def test_on_postgresql_appends_commit_in_sequence_order_so_a_shipper_skips_none(postgres_url: str) -> None:
    """Writer A appends (drawing the lower number) and holds its transaction open; writer B appends and
    commits. Were B's higher number visible first, a shipper reading past it would never see A's. The
    append lock makes B wait for A: the shipper, reading all along, gets both, once, in order."""
    state = StateStore(postgres_url)
    a_appended, a_may_commit, done = threading.Event(), threading.Event(), threading.Event()
    shipped: list[tuple[int, str]] = []

    def writer_a() -> None:
        with state.write() as connection:
            eventlog.append(connection, [event("a")])
            a_appended.set()
            a_may_commit.wait(10)

    def writer_b() -> None:
        with state.write() as connection:
            eventlog.append(connection, [event("b")])

    def shipper() -> None:
        watermark = 0
        while not done.is_set() or len(shipped) < 2:
            with state.read() as connection:
                for row in eventlog.events_after(connection, watermark, 100):
                    shipped.append((row.seq, row.event.event_id))
                    watermark = row.seq
            time.sleep(0.01)

    threads = [
        threading.Thread(target=writer_a),
        threading.Thread(target=writer_b),
        threading.Thread(target=shipper),
    ]
    try:
        threads[0].start()
        assert a_appended.wait(10)
        threads[1].start()
        threads[2].start()
        time.sleep(0.5)  # B has had ample time to commit, were it not waiting for A
        a_may_commit.set()
        for thread in threads[:2]:
            thread.join(10)
        done.set()
        threads[2].join(10)
    finally:
        a_may_commit.set()
        state.close()
    assert [event_id for _seq, event_id in shipped] == ["a", "b"]
    assert shipped[0][0] < shipped[1][0]
