"""What copying one event store into another asks of the stores: the months they hold, batches of one month
in key order, and where a copy of a month stopped (`funnels events copy`, `funnels.ingest.copy`).

How it works: a month is a partition of the events table (`PARTITION BY toYYYYMM(ts)`), and a batch is the
next rows of one month in the table's sort order, (user key, time, event id), after the last row of the
batch before: `LIMIT n WITH TIES`, so rows that share a sort key (a row stored twice and not yet merged)
never straddle two batches. The read goes in the table's order from the primary key, so a batch costs its
own rows, not the month's. Each batch is one insert into the target, within one partition: a month on the
target is always a whole number of batches, in order, so its greatest sort key is where its copy resumes.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from funnels.store.chdb_events import ChdbEventStore
from funnels.store.events import ARROW_SCHEMA, EVENT_COLUMNS, EventStore

Key = tuple[str, int, str]  # a row's sort key: user key, time (ms), event id

_COLUMNS = ", ".join(EVENT_COLUMNS)
_IN_MONTH = "toYYYYMM(ts) = {month:UInt32}"
_AFTER = (
    " AND user_key >= {user_key:String} AND (user_key, ts, event_id) > "
    "({user_key:String}, fromUnixTimestamp64Milli({ts:Int64}, 'UTC'), {event_id:String})"
)


def month_counts(store: EventStore, checksum: bool = False) -> dict[int, tuple[int, int]]:
    """Per month (YYYYMM): the events stored and, with `checksum`, a sum of a hash of each row's sort key
    (0 without it). With it, rows stored twice count once (`FINAL`), so a store that has merged them and
    one that has not yet agree; without it, the count reads only `ts`."""
    if checksum:
        select = "count(), sum(cityHash64(event_id, user_key, ts)) FROM events FINAL"
    else:
        select = "count(), 0 FROM events"
    rows = store.query(f"SELECT toYYYYMM(ts) AS month, {select} GROUP BY month ORDER BY month").rows
    return {int(month): (int(count), int(total)) for month, count, total in rows}


def read_batch(source: ChdbEventStore, month: int, after: Key | None, rows: int) -> pa.Table:
    """The next `rows` events of `month` after the sort key `after` (all of them from the start when None),
    in sort order, with every row that shares the last one's sort key."""
    params: dict[str, Any] = {"month": month, "rows": rows}
    where = _IN_MONTH
    if after is not None:
        where += _AFTER
        params.update(user_key=after[0], ts=after[1], event_id=after[2])
    table = source.query_arrow(
        f"SELECT {_COLUMNS} FROM events WHERE {where} "
        "ORDER BY user_key, ts, event_id LIMIT {rows:UInt64} WITH TIES",
        params,
    )
    return table.cast(ARROW_SCHEMA) if table.num_rows else ARROW_SCHEMA.empty_table()


def last_key(table: pa.Table) -> Key:
    """The sort key of a batch's last row."""
    last = table.num_rows - 1
    ts = table.column("ts").cast(pa.int64())[last].as_py()
    return (table.column("user_key")[last].as_py(), ts, table.column("event_id")[last].as_py())


def stored_until(target: EventStore, month: int) -> Key | None:
    """The greatest sort key of `month` in the target (where its copy resumes); None when it has none. Read
    in reverse table order: it costs a granule, not the month."""
    row = target.query(
        f"SELECT user_key, toUnixTimestamp64Milli(ts), event_id FROM events WHERE {_IN_MONTH} "
        "ORDER BY user_key DESC, ts DESC, event_id DESC LIMIT 1",
        {"month": month},
    ).first()
    return None if row is None else (str(row[0]), int(row[1]), str(row[2]))


def top_events(store: EventStore, limit: int) -> list[tuple[str, str]]:
    """The most frequent (type, event) pairs, most first (from the names projection: a few rows a day)."""
    rows = store.query(
        "SELECT type, event FROM events GROUP BY type, event ORDER BY count() DESC, type, event "
        "LIMIT {limit:UInt32}",
        {"limit": limit},
    ).rows
    return [(str(kind), str(event)) for kind, event in rows]


def time_span(store: EventStore) -> tuple[str, str] | None:
    """The first and last UTC day of the events stored (YYYY-MM-DD); None when there are none."""
    row = store.query(
        "SELECT toString(toDate(min(ts))), toString(toDate(max(ts))), count() FROM events"
    ).first()
    return None if row is None or not int(row[2]) else (str(row[0]), str(row[1]))
