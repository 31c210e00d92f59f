"""`GET /v0/funnel/people`: the users behind a step of a funnel, one page at a time.

How it works: the funnel's own per-user SQL (`choose_per_user`: one row per user, its furthest step `lvl`,
the times `t1..tn` of the path `/v0/funnel` measures and the first-touch breakdown value `bd0`) is the
source, with the user it groups by added as a column (`with_user`). The outcome picks users by `lvl`
(`outcome_sql`), so their counts are the funnel's rows by construction; `breakdown_value` keeps one
row's users, the values ranked over every entered user as the funnel ranks them (window functions). Users are ordered by a 64-bit
key, the hash of who they are (`sipHash64` of the user key; stitched, the person's hash the persons
dictionary answers, which is `sipHash64` of the person's key); a page is the first `limit` keys after the
cursor (the last key of the previous page), taken with `groupArraySorted` in the same pass that counts
every matching user. A key orders the same on every page and no two users share one, so pages read in
order never repeat or skip a user. Stitched, a page's person hashes are turned back into the persons'
keys (`person_keys`): the user ids their keys link to (`identity_keys_by_user`), else a key stored under
that hash in the scanned range (a key nothing links is its own person).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from funnels.analytics.funnel import timed_query
from funnels.analytics.query import (
    MAX_STEPS,
    FunnelQuery,
    QueryValidationError,
    parse_choice,
    parse_funnel_part,
    parse_int,
    parse_text,
    reject_sample,
)
from funnels.analytics.sql import Params, choose_per_user, initiator_tables, user_column
from funnels.store.events import KEYS_BY_USER, ClusterLayout, EventStore
from funnels.store.groups import group_names

Outcome = Literal["reached", "converted", "dropped"]
OUTCOMES: tuple[Outcome, ...] = ("reached", "converted", "dropped")
Format = Literal["json", "csv"]
FORMATS: tuple[Format, ...] = ("json", "csv")
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 10_000
MAX_CSV_LIMIT: Final = 1_000_000
_CURSOR = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class PeopleQuery:
    funnel: FunnelQuery
    step: int = 1  # 1-based, as in the funnel's rows
    outcome: Outcome = "reached"
    limit: int = DEFAULT_LIMIT
    after: int | None = None  # the cursor: the last key of the previous page
    format: Format = "json"
    breakdown_value: str | None = None  # only the users a breakdown row of this label counts

    def selects(self, level: int) -> bool:
        """Whether a user whose furthest step is `level` is behind this step with this outcome."""
        if self.outcome == "converted":
            return level >= len(self.funnel.steps)
        if self.outcome == "dropped":
            return level == self.step - 1
        return level >= self.step


def cursor_text(key: int) -> str:
    return f"{key:016x}"


def parse_people_query(params: dict[str, Any]) -> PeopleQuery:
    """The funnel's parameters plus `step` (1-based, default 1), `outcome` (reached, the default, converted
    or dropped; dropped needs a step from 2: the users who reached the step before and not this one),
    `limit` (1–10,000, default 100; with `format=csv` up to 1,000,000, default that), `cursor` (a page's
    `next_cursor`) and `format` (json or csv); every problem collected into one `QueryValidationError`."""
    errors: dict[str, str] = {}
    funnel = parse_funnel_part(params, errors)
    reject_sample(funnel, errors)
    n = len(funnel.steps) if funnel else MAX_STEPS
    outcome = parse_choice(params.get("outcome"), OUTCOMES, errors, "outcome")
    step = parse_int(params.get("step"), errors, "step", 1, 1, n)
    if outcome == "dropped" and "step" not in errors:
        if params.get("step") in (None, ""):
            errors["step"] = "required with outcome=dropped (2 or more)"
        elif step < 2:
            errors["step"] = "must be 2 or more with outcome=dropped (the users who reached the step before)"
    format_ = parse_choice(params.get("format"), FORMATS, errors, "format")
    high = MAX_CSV_LIMIT if format_ == "csv" else MAX_LIMIT
    limit = parse_int(
        params.get("limit"), errors, "limit", high if format_ == "csv" else DEFAULT_LIMIT, 1, high
    )
    after = None
    raw_cursor = params.get("cursor")
    if raw_cursor not in (None, ""):
        if isinstance(raw_cursor, str) and _CURSOR.fullmatch(raw_cursor):
            after = int(raw_cursor, 16)
        else:
            errors["cursor"] = "must be the next_cursor of a previous page"
    value = None
    if params.get("breakdown_value") is not None:
        value = parse_text(params.get("breakdown_value"), "breakdown_value", errors)
        if funnel is not None and not funnel.breakdown:
            errors["breakdown_value"] = "needs breakdown (a row's breakdown label)"
    if errors:
        raise QueryValidationError(errors)
    assert funnel is not None
    return PeopleQuery(funnel, step, outcome, limit, after, format_, value)


def with_user(per_user: str, user_name: str) -> str:
    """The per-user SQL with the user it groups by as a first column `user_`: every builder's outer SELECT
    reads from the subquery that groups by `user_name` (`sql._user`), so the name is in scope there. Kept
    out of sql.py while other work changes it; the builders could return the column themselves (the
    funnel's queries select theirs by name), and tests/analytics/test_people.py fails if one stops fitting."""
    assert per_user.startswith("SELECT ")
    return f"SELECT {user_name} AS user_, {per_user.removeprefix('SELECT ')}"


def outcome_sql(query: PeopleQuery) -> str:
    n = len(query.funnel.steps)
    if query.outcome == "converted":
        return f"lvl >= {n}"
    if query.outcome == "dropped":
        return f"lvl = {query.step - 1}"
    return f"lvl >= {query.step}"


def people_sql(query: PeopleQuery, layout: ClusterLayout | None = None) -> tuple[str, Params]:
    """One row: every matching user's count, and the page: up to `limit + 1` tuples (key, user, lvl,
    t1..tn, breakdown value) after the cursor, in key order. `user` is the user key (raw) or the person's
    hash (stitched), the key its hash. On a cluster (`layout`) users are folded on the initiator over the
    Distributed `events`, as a stitched funnel is (`initiator_tables`)."""
    funnel = query.funnel
    params: Params = {}
    per_user = choose_per_user(funnel)(funnel, params, initiator_tables(layout))
    user_name = user_column(funnel)
    key = "sipHash64(user_)" if user_name == "user_key" else "user_"
    times = ", ".join(f"t{k}" for k in range(1, len(funnel.steps) + 1))
    size = f"{{p{len(params)}:UInt64}}"
    params[f"p{len(params)}"] = query.limit + 1
    after = "1"
    if query.after is not None:
        after = f"key_ > {{p{len(params)}:UInt64}}"
        params[f"p{len(params)}"] = query.after
    users = (
        f"SELECT {key} AS key_, user_, lvl, {times}, if(bd0 = '', '(none)', bd0) AS bd "
        f"FROM ({with_user(per_user, user_name)})"
    )
    where = outcome_sql(query)
    if query.breakdown_value is not None:  # the funnel's buckets: values ranked by step-1 users, top N kept
        top_n, label = f"{{p{len(params)}:UInt32}}", f"{{p{len(params) + 1}:String}}"
        params[f"p{len(params)}"] = funnel.breakdown_top_n
        params[f"p{len(params)}"] = query.breakdown_value
        users = (
            f"SELECT *, dense_rank() OVER (ORDER BY entered_ DESC, bd ASC) AS rnk_ FROM ("
            f"SELECT *, count() OVER (PARTITION BY bd) AS entered_ FROM ({users}) WHERE lvl >= 1)"
        )
        where += f" AND if(rnk_ <= {top_n}, bd, 'Others') = {label}"
    sql = (
        f"SELECT count() AS users, groupArraySortedIf({size})((key_, user_, lvl, {times}, bd), {after}) "
        f"FROM ({users}) WHERE {where}"
    )
    return sql, params


def person_keys(store: EventStore, query: FunnelQuery, hashes: list[int]) -> dict[int, str]:
    """Each person hash's key: the user id that keys link to, else a key of that hash in the scanned range
    (a key nothing links to is its own person)."""
    if not hashes:
        return {}
    found = {
        int(h): str(name)
        for h, name in store.query(
            f"SELECT sipHash64(user) AS h, any(user) FROM {KEYS_BY_USER} "
            "WHERE h IN (SELECT toUInt64(arrayJoin({hashes:Array(String)}))) GROUP BY h",
            {"hashes": [str(h) for h in hashes]},  # decimal text: the store binds lists of strings
        ).rows
    }
    rest = [h for h in hashes if h not in found]
    if rest:
        rows = store.query(
            "SELECT sipHash64(user_key) AS h, any(user_key) FROM events "
            "WHERE ts >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
            "AND ts <= fromUnixTimestamp64Milli({end:Int64}, 'UTC') AND h IN (SELECT toUInt64(arrayJoin({hashes:Array(String)}))) GROUP BY h",
            {"hashes": [str(h) for h in rest], "start": query.from_ms, "end": query.scan_end_ms},
        ).rows
        found |= {int(h): str(name) for h, name in rows}
    return found


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Person:
    key: int  # the order key (cursor)
    user_key: str
    level: int  # the furthest step reached
    times_ms: tuple[int | None, ...]  # each step's time on the measured path, None past `level`
    breakdown: str  # first-touch value, '(none)' without one


def build_people(
    query: PeopleQuery, users: int, page: list[Person], statistics: dict[str, Any]
) -> dict[str, Any]:
    """The response: `page` holds up to `limit + 1` people in key order; the extra one only says that
    another page follows."""
    funnel = query.funnel
    shown = page[: query.limit]
    data = []
    for person in shown:
        row: dict[str, Any] = {"user_key": person.user_key, "last_step": person.level}
        if funnel.breakdown:
            row["breakdown"] = person.breakdown
        row["times"] = [iso(ms) for ms in person.times_ms]
        data.append(row)
    more = len(page) > query.limit
    return {
        "step": query.step,
        "event": funnel.steps[query.step - 1].name,
        "outcome": query.outcome,
        **({"breakdown_value": query.breakdown_value} if query.breakdown_value is not None else {}),
        "steps": [step.name for step in funnel.steps],
        "users": users,
        "data": data,
        "rows": len(data),
        "next_cursor": cursor_text(shown[-1].key) if more and shown else None,
        "statistics": statistics,
    }


def people_csv(body: dict[str, Any], breakdown: bool) -> str:
    """A people response as CSV: a header row, then user key, last step, breakdown (with one), and each
    step's time (ISO 8601, UTC; empty past the last step)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["user_key", "last_step"] + (["breakdown"] if breakdown else [])
    writer.writerow(header + [f"step_{k}_at" for k in range(1, len(body["steps"]) + 1)])
    for row in body["data"]:
        first = [row["user_key"], row["last_step"]] + ([row["breakdown"]] if breakdown else [])
        writer.writerow(first + [time or "" for time in row["times"]])
    return out.getvalue()


def run_people(store: EventStore, query: PeopleQuery) -> dict[str, Any]:
    """The `GET /v0/funnel/people` response body for a validated query."""
    funnel = query.funnel
    sql, params = people_sql(query, store.cluster)
    results, statistics = timed_query(store, sql, params, funnel.stitched)
    users, items = results.rows[0] if results.rows else (0, [])
    names: dict[int, str] = {}
    if funnel.aggregate_by:  # the groups' primary ids
        names = group_names(store, funnel.aggregate_by, [int(item[1]) for item in items])
    elif funnel.stitched:
        names = person_keys(store, funnel, [int(item[1]) for item in items])
    n = len(funnel.steps)
    page = [
        Person(
            key=int(item[0]),
            user_key=names.get(int(item[1]), cursor_text(int(item[1])))
            if user_column(funnel) == "person"
            else str(item[1]),
            level=int(item[2]),
            times_ms=tuple(
                None if t is None or k > int(item[2]) else int(t) for k, t in enumerate(item[3 : 3 + n], 1)
            ),  # an open funnel's later steps may have fired, but the path stops at `lvl`
            breakdown=str(item[3 + n]),
        )
        for item in items
    ]
    return build_people(query, int(users), page, statistics)
