"""Idempotency records on both dialects: one claim per key however the requests race, replays, takeovers."""

from __future__ import annotations

import threading

from funnels.store import idempotency
from funnels.store.idempotency import LEASE_MS, TTL_MS, Claim, RecordKey, StoredResponse
from funnels.store.state import StateStore

RECORD = RecordKey("key-1", "POST", "/v1/batch", "idem-1")
NOW = 1_775_001_600_000


def test_racing_requests_with_one_key_get_one_claim_and_no_error(state: StateStore) -> None:
    claims: list[Claim] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        claims.append(idempotency.begin(state, RECORD, "fp", NOW))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claim.outcome for claim in claims) == ["in_progress"] * 7 + ["proceed"]
    assert idempotency.count(state) == 1


def test_a_finished_record_replays_and_a_different_body_is_a_mismatch(state: StateStore) -> None:
    claim = idempotency.begin(state, RECORD, "fp", NOW)
    response = StoredResponse(200, [("content-type", "application/json")], b'{"success":true}')
    assert idempotency.finish(state, RECORD, claim.token, response, NOW + 5)
    replay = idempotency.begin(state, RECORD, "fp", NOW + 10)
    assert replay.outcome == "replay" and replay.response == response
    assert idempotency.begin(state, RECORD, "other", NOW + 10).outcome == "mismatch"


def test_a_dead_requests_claim_is_taken_over_keeping_its_epoch_and_the_old_token_is_void(
    state: StateStore,
) -> None:
    first = idempotency.begin(state, RECORD, "fp", NOW)
    second = idempotency.begin(state, RECORD, "fp", NOW + LEASE_MS + 1)
    assert second.outcome == "proceed" and second.token != first.token
    assert second.epoch_ms == NOW  # the dead request may have committed: the retry shares its epoch
    assert not idempotency.finish(
        state, RECORD, first.token, StoredResponse(200, [], b""), NOW + LEASE_MS + 2
    )
    assert idempotency.count(state) == 1


def test_an_expired_record_starts_afresh_with_a_new_epoch(state: StateStore) -> None:
    first = idempotency.begin(state, RECORD, "fp", NOW)
    idempotency.finish(state, RECORD, first.token, StoredResponse(201, [], b"old"), NOW + 1)
    later = NOW + TTL_MS + 1
    again = idempotency.begin(state, RECORD, "different body now", later)
    assert again.outcome == "proceed" and again.epoch_ms == later
    assert idempotency.prune(state, later) == 0  # the row was reused, not left behind expired
