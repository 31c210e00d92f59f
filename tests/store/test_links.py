"""Which inserts may change an identity link (`funnels.store.links`): the claims a batch makes, how they
settle against the links known, and the bounded memory of known links. The store's use of them (lookups,
restarts, the dictionary's reloads) is tested in test_events.py and tests/analytics/test_stitching.py."""

from __future__ import annotations

import pyarrow as pa
import pytest

from funnels.events import Event
from funnels.store.events import events_to_arrow
from funnels.store.links import Claim, KnownLinks, batch_claims, settle
from tests.analytics.conftest import at, ev


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([ev("u1", at(0))], {}),
        ([ev("", at(0), anonymous_id="a1")], {}),
        ([ev("u1", at(0), anonymous_id="u1")], {}),  # its own id: no link
        (
            [ev("u1", at(0), event_id="e1"), ev("u2", at(0, 5), event_id="e2", anonymous_id="a2")],
            {"a2": (at(0, 5), "e2", "u2")},
        ),
        (  # the least claim per key: by time, then event id, then user id
            [
                ev("u1", at(0, 9), event_id="e1", anonymous_id="a1"),
                ev("u2", at(0, 5), event_id="e3", anonymous_id="a1"),
                ev("u3", at(0, 5), event_id="e2", anonymous_id="a1"),
                ev("u0", at(0, 5), event_id="e2", anonymous_id="a1"),
            ],
            {"a1": (at(0, 5), "e2", "u0")},
        ),
        ([ev("u1", at(0), "alias", props={"previousId": "u0"})], None),  # its key is a property
    ],
    ids=["user-only", "anonymous-only", "own-id", "both-ids", "least-claim", "alias"],
)
def test_the_claims_a_batch_makes(events: list[Event], expected: dict[str, Claim] | None) -> None:
    assert batch_claims(events_to_arrow(events)) == expected


def test_claims_from_tables_of_some_columns() -> None:
    assert batch_claims(pa.table({"event_id": ["e1"], "type": ["track"]})) == {}
    assert batch_claims(pa.table({"type": ["alias"], "user_id": ["u1"]})) is None
    assert batch_claims(pa.table({"user_id": [None, "u1"], "anonymous_id": ["a1", None]})) == {}
    # a claiming row without a time or an event id: the store would default them, so it is not told here
    assert batch_claims(pa.table({"user_id": ["u1"], "anonymous_id": ["a1"]})) is None
    seconds = pa.array([at(0) // 1000], pa.timestamp("s", tz="UTC"))
    table = pa.table({"user_id": ["u1"], "anonymous_id": ["a1"], "event_id": ["e1"], "ts": seconds})
    assert batch_claims(table) is None


LINK = (at(0, 100), "e5", "u1")  # a1's link: u1, claimed at 100 ms


@pytest.mark.parametrize(
    ("claim", "link", "changes", "after"),
    [
        ((at(0, 50), "e1", "u1"), None, True, (at(0, 50), "e1", "u1")),  # a key without a link
        ((at(0, 200), "e9", "u1"), LINK, False, LINK),  # its user again, later (analytics.js after identify)
        (LINK, LINK, False, LINK),  # the same event again
        ((at(0, 50), "e1", "u1"), LINK, False, (at(0, 50), "e1", "u1")),  # its user, earlier: still u1
        ((at(0, 200), "e9", "u2"), LINK, False, LINK),  # another user, later: cannot win
        ((at(0, 100), "e6", "u2"), LINK, False, LINK),  # … the same millisecond, a later event id
        ((at(0, 100), "e4", "u2"), LINK, True, None),  # … an earlier event id: may win
        ((at(0, 50), "e1", "u2"), LINK, True, None),  # another user, earlier: may win
    ],
    ids=[
        "new-key",
        "same-user-later",
        "same-claim",
        "same-user-earlier",
        "other-user-later",
        "other-user-same-ms-later-id",
        "other-user-same-ms-earlier-id",
        "other-user-earlier",
    ],
)
def test_a_claim_settles_against_the_link_known(
    claim: Claim, link: Claim | None, changes: bool, after: Claim | None
) -> None:
    assert settle({"a1": claim}, {"a1": link}) == (changes, {"a1": after})


def test_a_batch_changes_links_if_any_of_its_claims_may() -> None:
    claims = {"a1": (at(0, 200), "e9", "u1"), "a2": (at(0, 1), "e1", "u7")}
    links: dict[str, Claim | None] = {"a1": LINK, "a2": None}
    assert settle(claims, links) == (True, {"a1": LINK, "a2": claims["a2"]})
    assert settle({"a1": claims["a1"]}, links) == (False, {"a1": LINK})


def test_known_links_keep_the_keys_seen_most_recently() -> None:
    known = KnownLinks(capacity=4)  # two generations of two keys
    known.update({"a1": LINK, "a2": LINK})  # the newer generation fills: it becomes the older
    known.update({"a3": LINK})
    assert all(key in known for key in ("a1", "a2", "a3")) and len(known) == 3
    known.update({"a1": LINK})  # used again: into the newer generation, which fills; the older (a2) goes
    known.update({"a4": LINK})
    assert [key for key in ("a1", "a2", "a3", "a4") if key in known] == ["a1", "a3", "a4"]
    known.update({"a1": None})  # forgotten: its link is not known any more
    assert known.get("a1") is None and "a1" not in known
    known.clear()
    assert len(known) == 0
