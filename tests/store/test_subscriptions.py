"""Opt-outs and signing keys as the state store keeps them: unsubscribing says whether it was new and keeps
the first time and source; a signing key is generated once, whoever asks first, and then read back."""

from __future__ import annotations

import threading

from funnels.store import signing_keys, subscriptions
from funnels.store.identity import create_instance
from funnels.store.state import StateStore


def test_unsubscribe_says_whether_the_opt_out_is_new_and_keeps_the_first(state: StateStore) -> None:
    with state.write() as connection:
        assert subscriptions.unsubscribe(connection, 1, "email:tips", 1_000, "link") is True
        assert subscriptions.unsubscribe(connection, 1, "email:tips", 2_000, "import") is False
        assert subscriptions.unsubscribe(connection, 1, "email", 3_000, "import") is True
    with state.read() as connection:
        assert subscriptions.opt_outs(connection, [1, 2]) == {
            1: [
                subscriptions.OptOut("email:tips", 1_000, "link"),
                subscriptions.OptOut("email", 3_000, "import"),
            ]
        }


def test_instances_by_property_matches_addresses_in_any_case(state: StateStore) -> None:
    with state.write() as connection:
        ann = create_instance(connection, "customer", "ann", None, '{"email": " Ann@Example.com "}', 1)
        twin = create_instance(connection, "customer", "twin", None, '{"email": "ann@example.com"}', 1)
        create_instance(connection, "customer", "bob", None, '{"email": 7}', 1)  # not an address
        create_instance(connection, "organization", "org", None, '{"email": "ann@example.com"}', 1)
    with state.read() as connection:
        found = subscriptions.instances_by_property(connection, "customer", "email")
    assert found == {"ann@example.com": [ann, twin]}


def test_a_signing_key_is_created_once_and_the_first_writer_wins(state: StateStore) -> None:
    answers: list[str] = []

    def ask(candidate: str) -> None:
        with state.write() as connection:
            answers.append(signing_keys.get_or_create(connection, "unsubscribe", candidate, 1_000))

    threads = [threading.Thread(target=ask, args=(f"secret-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(answers)) == 1 and answers[0].startswith("secret-")
    with state.write() as connection:
        assert signing_keys.get_or_create(connection, "unsubscribe", "another", 2_000) == answers[0]
        assert signing_keys.get_or_create(connection, "other", "its own", 2_000) == "its own"
