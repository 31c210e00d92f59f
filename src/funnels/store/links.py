"""Which inserts may change an identity link, told without reading the whole links table.

A key's link is the user of its least claim (time, event id, user id) (docs/semantics.md, "Users and
persons"), and the persons dictionary must be reloaded before a stitched query only when an insert may have
changed one. analytics.js sends both ids on every event once a visitor has identified, so nearly every
shipped batch carries claims, but almost all of them repeat a link already stored: the same user, later.

How it works: `batch_claims` reads each key's least claim in a batch by the rule the links view applies
(`funnels.store.events.links_select`). `KnownLinks` remembers, for the keys this process has seen lately,
a claim no earlier than the key's link and naming its user. `settle` compares the two: a claim on a key
without a link, or earlier than the known one and naming another user, may change a link; any other claim
cannot (the same user keeps the key whichever claim wins, and a later claim never wins). Keys it does not
remember are read from the links table by its primary key first, so a batch costs a query only when it
has keys not seen lately.

Every insert of this process goes through `settle`, and claims only ever add to a key's candidates, so a
remembered claim stays no earlier than the stored link. Its user is the link's because one process owns
the embedded store: with several writers (a ClickHouse server), another writer's earlier claim could give
the key another user unseen here, so there the user rule must go (an earlier claim of any user counts).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

Claim = tuple[int, str, str]  # (time in ms, event id, user id): a key's least claim is its link


def _present(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    """Whether each row's `name` is a non-empty string (None when the table has no such column)."""
    if name not in table.column_names:
        return None
    return pc.fill_null(pc.not_equal(table.column(name), ""), False)


def batch_claims(table: pa.Table) -> dict[str, Claim] | None:
    """Each key's least claim among the rows: a row with a user id claims its anonymous id unless that is
    empty or the user id itself. None when the rows may claim keys this cannot read, so the caller must
    assume a change: an alias (its key is a property; aliases are rare), or a claiming row whose time or
    event id is missing or not of the store's types."""
    user, anonymous = _present(table, "user_id"), _present(table, "anonymous_id")
    if user is None:
        return {}
    if "type" in table.column_names and pc.any(pc.equal(table.column("type"), "alias")).as_py():
        return None
    if anonymous is None:
        return {}
    claiming = pc.and_(
        pc.and_(user, anonymous),
        pc.fill_null(pc.not_equal(table.column("anonymous_id"), table.column("user_id")), False),
    )
    if not pc.any(claiming).as_py():
        return {}
    if "ts" not in table.column_names or "event_id" not in table.column_names:
        return None
    rows = table.filter(claiming)
    if rows.schema.field("ts").type != pa.timestamp("ms", tz="UTC") or not pa.types.is_string(
        rows.schema.field("event_id").type
    ):
        return None
    ts, event_ids = rows.column("ts"), rows.column("event_id")
    if ts.null_count or event_ids.null_count:
        return None
    claims: dict[str, Claim] = {}
    for key, ms, event_id, user_id in zip(
        rows.column("anonymous_id").to_pylist(),
        ts.cast(pa.int64()).to_pylist(),
        event_ids.to_pylist(),
        rows.column("user_id").to_pylist(),
        strict=True,
    ):
        claim = (ms, event_id, user_id)
        known = claims.get(key)
        if known is None or claim < known:
            claims[key] = claim
    return claims


def settle(
    claims: Mapping[str, Claim], links: Mapping[str, Claim | None]
) -> tuple[bool, dict[str, Claim | None]]:
    """Whether storing `claims` may change a link, given each key's link as known (None: it has none), and
    each key's link as known once they are stored (None: not known, look it up again)."""
    changes = False
    after: dict[str, Claim | None] = {}
    for key, claim in claims.items():
        link = links.get(key)
        if link is None:  # a new link: this claim
            changes, after[key] = True, claim
        elif claim[2] == link[2]:  # the same user keeps the key, whichever claim is earlier
            after[key] = min(claim, link)
        elif claim < link:  # may win: the link's user could change
            changes, after[key] = True, None
        else:  # later than the link: it cannot win
            after[key] = link
    return changes, after


class KnownLinks:
    """The links of at most `capacity` keys, those seen most recently (two generations: a key used from
    the older one moves to the newer; when the newer is half full, the older is dropped)."""

    def __init__(self, capacity: int) -> None:
        self.half = max(1, capacity // 2)
        self._newer: dict[str, Claim] = {}
        self._older: dict[str, Claim] = {}

    def get(self, key: str) -> Claim | None:
        found = self._newer.get(key)
        return self._older.get(key) if found is None else found

    def __contains__(self, key: str) -> bool:
        return key in self._newer or key in self._older

    def __len__(self) -> int:
        return len(self._newer) + len(self._older)

    def update(self, links: Mapping[str, Claim | None]) -> None:
        """Remember these keys' links (None: forget the key)."""
        for key, link in links.items():
            self._older.pop(key, None)
            if link is None:
                self._newer.pop(key, None)
                continue
            self._newer[key] = link
            if len(self._newer) >= self.half:
                self._older, self._newer = self._newer, {}

    def clear(self) -> None:
        self._newer.clear()
        self._older.clear()
