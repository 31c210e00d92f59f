"""`funnels.events`: the ids given to events that came without one."""

from __future__ import annotations

import re

from funnels.events import new_event_id


def test_a_new_event_id_is_128_random_bits_in_hex_and_never_repeats() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", id_) for id_ in ids)
    assert len(set(ids)) == len(ids)
    # Every bit varies (a uuid4's version and variant bits would not): no fixed digit a guess could use.
    bits = [int(id_, 16) for id_ in ids]
    assert all(any(b >> i & 1 for b in bits) and not all(b >> i & 1 for b in bits) for i in range(128))
