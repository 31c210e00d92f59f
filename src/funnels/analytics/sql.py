"""Funnel SQL: one pure builder per funnel type, each returning (sql, params).

Every user value (step types, names, filter values, dates, window) is a ClickHouse query parameter; SQL text
is built only from identifiers we control (standard column names, generated parameter names).

Query shape (all funnel types):

    per_user:  one row per user: `lvl` (furthest step reached), `t1..tn` (ms time of each step on the chosen
               path, NULL past `lvl`) and `bd0` (first-touch breakdown value, '' without a breakdown)
    result:    without a breakdown, users per step and exact medians of the step-to-step times directly;
               with one, the same per value as median states, the top N values by step-1 users kept and
               the rest merged into 'Others', ordered by rank

How the closed funnel works: each user's matching events are collected into one array sorted by
(time, step) and folded left to right (`arrayFold`). The fold keeps, for every level k, the latest start
time of a chain of distinct events that has completed steps 1..k. A later start dominates an earlier one
at the same level (it has more of its window left), so this is exact, like ClickHouse's own
`windowFunnel`, but it also enforces that one event serves at most one step. The path for the medians is
the latest start that reaches the user's furthest step, each step at the earliest moment it can be
reached from that start (see docs/semantics.md).

When no event can match two steps (`FunnelQuery.steps_exclusive`) the fold takes one event at a time;
ties in the same millisecond are ordered by step, so consecutive steps in one millisecond chain up. When
steps may overlap (e.g. page → connect → page), events of one millisecond are a group, and the fold tracks
which sets of steps the group's events can cover with distinct events (`cov`), so any arrival order within
the millisecond gives the same, exact answer; that fold also carries each level's path.

Users: with `identity=raw` a user is the stored `user_key`; stitched (the default), each row's user key is
looked up in the `identity_persons` dictionary (`person`, one in-memory lookup per scanned row, by the
key's 64-bit hash, answering the person's hash; keys without a link are their own person). `_user` writes
that expression for every builder; the store keeps the dictionary current (`EventStore.query(...,
persons=True)`). With `aggregate_by`, that user's hash is looked up once more, in the memberships
dictionary (`funnels.store.groups`), and the row repeated for each of its groups (`arrayJoin`; none: dropped),
so the builders fold each group's members' events as one user's. The SQL is the same on every event-store
backend.

On a cluster whose shards each hold whole user keys (`funnels.store.cluster`), a raw funnel runs in two
levels: `shard_funnel_sql` on every shard (per breakdown value: counts and median states), merged by
`merged_funnel_sql` on the initiator (`cluster_funnel_sql`); see docs/deploy.md, "A ClickHouse cluster".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from funnels.analytics.query import NUMBER_PATTERN, NUMERIC_OPERATORS, Filter, FunnelQuery, Step
from funnels.store.events import (
    GROUPS_DICTIONARY,
    IDENTIFIES_TABLE,
    PERSONS_DICTIONARY,
    SHARD_IDENTIFIES,
    ClusterLayout,
)

Params = dict[str, object]


@dataclass(frozen=True)
class Tables:
    """What a funnel reads: the events table (on a cluster's shard, its local one) and the persons
    dictionary (on a cluster, named with its database: a query the shards run resolves unqualified names
    in their own default database)."""

    events: str = "events"
    persons: str = PERSONS_DICTIONARY
    groups: str = GROUPS_DICTIONARY  # `aggregate_by`'s memberships (`funnels.store.groups`)
    identifies: str = IDENTIFIES_TABLE  # the identify events alone (`identified_sql`)


ONE_SERVER = Tables()
PerUser = Callable[[FunnelQuery, Params, Tables], str]

_COMPARATORS = {"gt": ">", "lt": "<", "gte": ">=", "lte": "<="}
TS_MS = "toInt64(toUnixTimestamp64Milli(ts))"


class Binder:
    """Hands out parameter names and records their values."""

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, value: object, type_: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{type_}}}"


def property_text(key: str) -> str:
    """A JSON property as text: strings as they are, integers and booleans spelled as in JSON, else ''."""
    return (
        f"multiIf(JSONType(properties, {key}) = 'String', JSONExtractString(properties, {key}), "
        f"JSONType(properties, {key}) IN ('Int64', 'UInt64', 'Bool'), JSONExtractRaw(properties, {key}), '')"
    )


def _text_number(text: str) -> str:
    return f"if(match({text}, '{NUMBER_PATTERN}'), toFloat64OrNull({text}), NULL)"


def _property_number(key: str) -> str:
    """A JSON property as a number: JSON numbers, and strings that spell a number; else NULL."""
    return (
        f"multiIf(JSONType(properties, {key}) IN ('Int64', 'UInt64', 'Double'), JSONExtractFloat(properties, {key}), "
        f"JSONType(properties, {key}) = 'String', {_text_number(f'JSONExtractString(properties, {key})')}, NULL)"
    )


def filter_sql(item: Filter, bind: Binder) -> str:
    if item.is_column:
        text, number = item.operand, _text_number(item.operand)
    else:
        key = bind(item.operand, "String")
        text, number = property_text(key), _property_number(key)
    if item.operator in NUMERIC_OPERATORS:
        return f"ifNull({number} {_COMPARATORS[item.operator]} {bind(item.number, 'Float64')}, 0)"
    match item.operator:
        case "equals":
            return f"{text} = {bind(item.value, 'String')}"
        case "notEquals":
            return f"{text} != {bind(item.value, 'String')}"
        case "in" | "notIn":  # one Array(String) parameter: the SQL's size does not grow with the values
            return f"{text} {'IN' if item.operator == 'in' else 'NOT IN'} {bind(list(item.values), 'Array(String)')}"
        case "startsWith":
            return f"startsWith({text}, {bind(item.value, 'String')})"
        case "endsWith":
            return f"endsWith({text}, {bind(item.value, 'String')})"
        case "includes":
            return f"position({text}, {bind(item.value, 'String')}) > 0"
    raise ValueError(f"unknown operator {item.operator}")


def step_sql(step: Step, bind: Binder) -> str:
    """The condition an event must meet to match a step."""
    parts = [f"type = {bind(step.stored_type, 'String')}"]
    if step.stored_event is not None:
        parts.append(f"event = {bind(step.stored_event, 'String')}")
    parts += [filter_sql(item, bind) for item in step.filters]
    return "(" + " AND ".join(parts) + ")"


def _scan(query: FunnelQuery, bind: Binder, matched: str, is_step: Callable[[int], str]) -> tuple[str, str]:
    """The WHERE clause over the scanned range (`matched`: an expression over the inner query's own step
    columns, so each step condition is written and evaluated once) and the breakdown aggregate over the
    inner query's value (`_breakdown_value`): the first-touch value (earliest event with one; ties: the
    smallest), the last-touch value (latest; ties: the largest), both with the `-ArgMin`/`-ArgMax`
    combinator (`minArgMinIf(value, ts, …)`: the smallest value over the rows of the earliest time; a min
    of (time, value) tuples cost 0.87x the closed funnel at 10M events, this 0.29x), or for `step:K` the
    values of step K's events (`is_step(K)`: the inner query's test for it), sorted, of which
    `_step_value` picks the path's.
    First and last touch read every event with a value, `step:K` only step events."""
    wanted = matched
    value = _breakdown_value(query)
    k = query.attribution_step
    if not query.breakdown:
        breakdown = "''"
    elif k is None:
        wanted += f" OR {value} != ''"
        touch = _touch(
            query
        )  # `-ArgMin`: the smallest value among the earliest rows (last touch: largest, latest)
        breakdown = f"{touch}Arg{touch.capitalize()}If({value}, ts, {value} != '')"
        if query.hold_constant:  # each held value's group keeps (time, value): `held_per_user`
            breakdown = f"({touch}If({TS_MS}, {value} != ''), {breakdown})"
    else:
        hashed = ", h_" if per_value(query) else ""  # each value's row keeps its own events' (`_by_value`)
        breakdown = f"arraySort(groupArrayIf(({TS_MS}, {value}{hashed}), {value} != '' AND {is_step(k)}))"
    where = (
        f"ts >= fromUnixTimestamp64Milli({bind(query.from_ms, 'Int64')}, 'UTC') "
        f"AND ts <= fromUnixTimestamp64Milli({bind(query.scan_end_ms, 'Int64')}, 'UTC') AND ({wanted})"
    )
    return where, breakdown


def _touch(query: FunnelQuery) -> str:
    """The aggregate that picks a user's (time, value) by the attribution: the earliest, or the latest."""
    return "max" if query.breakdown_attribution == "last_touch" else "min"


def _user(query: FunnelQuery, tables: Tables, bind: Binder | None = None) -> tuple[str, str]:
    """The innermost SELECT's user column and the name the per-user GROUP BY uses: `user_key` as stored
    (raw), or the person it belongs to (stitched); with `hold_constant`, the pair (user, a 64-bit hash of
    the held values) `held_`, so the fold runs once per user and value (`held_per_user`). Hashed: grouping
    by an integer is cheaper than by the values' text (1.91× the closed funnel stitched at 10M, against
    2.00×); two values of one user would share a group only if their hashes collided."""
    key = "sipHash64(user_key)"  # the dictionary is keyed by ids' hashes and answers the person's hash
    user = f"dictGetOrDefault('{tables.persons}', 'person', {key}, {key})" if query.stitched else "user_key"
    if query.aggregate_by:
        assert bind is not None
        user = _group(query, tables, bind, user if query.stitched else key)
    if query.hold_constant:
        assert bind is not None
        return f"({user}, {_held_hash(query, bind)}) AS held_", "held_"
    name = user_column(query)
    return (f"{user} AS person", name) if name == "person" else ("user_key", name)


def _held_hash(query: FunnelQuery, bind: Binder) -> str:
    """A 64-bit hash of an event's held values (`hold_constant`), each as string filters see it."""
    values = []
    for held in query.hold_constant:
        name = held.removeprefix("properties.")
        values.append(
            property_text(bind(name, "String")) if held.startswith("properties.") else f"toString({held})"
        )
    return f"sipHash64({', '.join(values)})"


def per_value(query: FunnelQuery) -> bool:
    """Whether a held funnel's values need all the user's events (`_by_value`): strict (another value's
    event stands between two steps) or with exclusions (any value's exclusion event disqualifies)."""
    return bool(query.hold_constant) and (query.funnel_type == "strict" or bool(query.exclusions))


def _by_value(
    query: FunnelQuery,
    tables: Tables,
    bind: Binder,
    parts: tuple[str, str, str, str, str],
    columns: str,
    where: str,
) -> str:
    """The per-(user, held value) rows of a strict or exclusions funnel with `hold_constant` (`per_value`):
    each user's scanned events are collected once, their elements in arrays beside a parallel array `hs_`
    of the hash `h_` of each one's held values, and the rows repeated for each distinct value of the user's
    step-1 events (`v_`: a value without one cannot start a chain); each row folds `a`, the value's own view
    of the user's events (an event of another value matches no step there, but is still there). `held_` =
    (user, value), as `_user` names it, so `held_per_user` picks the best per user. `columns`: the scan's
    columns after the user's, `where` its condition.

    Parallel arrays, not (element, hash) tuples: sorting each value's plain integers (or the tuples of the
    general fold, which has no hash in them) is what the tuples cost most; at 10M events strict + held went
    from 2.3x the closed funnel to 1.4-1.6x, exclusions + held from 2.3-2.8x to 1.7-1.8x (docs/benchmarks.md).

    `parts`: the aggregates collecting the arrays (`hs_` among them), the values of the user's start
    elements (their `hs_` entries), the value's array from them and `v_`, the columns computed from `a`,
    and the breakdown aggregate."""
    collect, starts, array, folded, breakdown = parts
    user, user_name = _user(replace(query, hold_constant=()), tables, bind)
    value = (
        "bd_"
        if query.attribution_step is None
        else "arrayMap(y -> (y.1, y.2), arrayFilter(y -> y.3 = v_, bd_))"
    )
    return (
        f"SELECT ({user_name}, v_) AS held_, {array} AS a, {folded}, {value} AS bd0 FROM ("
        f"SELECT {user_name}, {collect}, arrayDistinct({starts}) AS values_, {breakdown} AS bd_ FROM ("
        f"SELECT {user}, {columns}, {_held_hash(query, bind)} AS h_ FROM {tables.events} WHERE {where}) "
        f"GROUP BY {user_name}) ARRAY JOIN values_ AS v_"
    )


def user_column(query: FunnelQuery) -> str:
    """The name the per-user queries group by: `person` (stitched, or a group of `aggregate_by`) or
    `user_key` (raw)."""
    return "person" if query.stitched or query.aggregate_by else "user_key"


def _group(query: FunnelQuery, tables: Tables, bind: Binder, member: str) -> str:
    """With `aggregate_by`: each scanned row once per group its user is a member of, as the group's hash
    (`arrayJoin` over the memberships dictionary's answer; a row of a user in no group is dropped). `member`
    is the hash looked up: the person's (stitched) or the user key's (raw)."""
    model, groups = bind(query.aggregate_by, "String"), tables.groups
    key = f"(sipHash64({model}, {member}) AS group_key_)"
    found = (  # `one`: the group of a member of one (no array to read); else `many` (empty: in none)
        f"if((dictGetOrDefault('{groups}', 'one', {key}, toUInt64(0)) AS one_) != 0, [one_], "
        f"dictGetOrDefault('{groups}', 'many', group_key_, emptyArrayUInt64()))"
    )
    if query.sample_threshold is not None:  # sampled: the groups in the sample alone (`sampled_tables`)
        found = f"arrayFilter(g_ -> g_ < {bind(query.sample_threshold, 'UInt64')}, {found})"
    return f"arrayJoin({found})"


def sampled_tables(query: FunnelQuery, tables: Tables, params: Params) -> Tables:
    """With `sample`, what a funnel reads narrowed to the users in the sample (docs/semantics.md,
    "Sampling"): a user is in when its 64-bit hash is under `query.sample_threshold` — raw, the user key's
    `sipHash64`; stitched, the person's (the persons dictionary's answer, so all of a person's keys are in
    or out together). The events source becomes a subquery with that filter, which ClickHouse merges with
    the builders' own WHERE; the rows outside the sample are dropped right after the scan reads them, before
    any per-user array is built. With `aggregate_by` the unit is the group, so the filter is on the groups
    `_group` joins (a member's row stays for its sampled groups only) and the source is unchanged. Without
    `sample`, `tables` as given."""
    if query.sample_threshold is None or query.aggregate_by:
        return tables
    key = "sipHash64(user_key)"
    user = f"dictGetOrDefault('{tables.persons}', 'person', {key}, {key})" if query.stitched else key
    bound = Binder(params)(query.sample_threshold, "UInt64")
    return replace(tables, events=f"(SELECT * FROM {tables.events} WHERE {user} < {bound})")


def _breakdown_value(query: FunnelQuery) -> str:
    """What the inner query calls the breakdown value: the column itself, or `bdv` for a property."""
    return "bdv" if query.breakdown_property is not None else str(query.breakdown)


def _breakdown_column(query: FunnelQuery, bind: Binder) -> str:
    """The inner query's breakdown value, if any: the column, or the event property as text (`bdv`)."""
    if not query.breakdown:
        return ""
    key = query.breakdown_property
    return f"{query.breakdown}, " if key is None else f"{property_text(bind(key, 'String'))} AS bdv, "


def _step_value(query: FunnelQuery) -> str:
    """The outer per-user query's breakdown value: the inner one (`bd0`), or with `step:K` the smallest
    value among step K's events at the path's step-K time (`tK`), '' past the user's last step."""
    k = query.attribution_step
    if k is None:
        return "bd0"
    return f"if(lvl >= {k}, arrayFirst(y -> y.1 = t{k}, bd0).2, '') AS bd0"


def closed_exclusive_per_user(query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER) -> str:
    """Closed funnel when no event can match two steps: a one-event-at-a-time fold over starts only.

    The fold keeps just f_k, the latest start at each level. The path is recovered afterwards from the
    winning start s* = f_lvl: each following step is the first event of that step at or after the previous
    one (`arrayFirst`, native and cheap), which is the earliest it can be reached from s*.

    Each event is packed into one Int64, (ms << 4) | step, so sorting by (time, step) is a plain integer
    sort. Step-1 events after `date_to` cannot start a chain and are dropped up front. What made this fast
    (bench/, docs/benchmarks.md): a narrow state (9 fields was 2.0x `windowFunnel`, 3 fields 1.4x) and the
    packed element (1.4x to 1.3x); cutting runs of repeated steps before folding cost more than it saved.
    """
    bind = Binder(params)
    n = len(query.steps)
    conditions = [step_sql(step, bind) for step in query.steps]
    to_end, window = bind(query.to_end_ms, "Int64"), bind(query.window_ms, "Int64")
    where, breakdown = _scan(query, bind, "step > 0", lambda k: f"step = {k}")
    t, s = "bitShiftRight(x, 4)", "bitAnd(x, 15)"  # an element is (ms << 4) | step: one integer to sort
    out = [f"if({s} = 1 AND {t} > acc.1, {t}, acc.1)"]
    for k in range(2, n + 1):
        prev, cur = f"acc.{k - 1}", f"acc.{k}"
        out.append(
            f"if({s} = {k} AND {prev} >= 0 AND {t} - {prev} <= {window} AND {prev} > {cur}, {prev}, {cur})"
        )
    fold = "(acc, x) -> (" + ", ".join(out) + ")"
    init = "(" + ", ".join("toInt64(-1)" for _ in range(n)) + ")"
    step_of = (
        f"multiIf({conditions[0]} AND {TS_MS} <= {to_end}, 1, "
        + "".join(f"{c}, {i + 1}, " for i, c in enumerate(conditions) if i)
        + "0)"
    )
    lvl = "multiIf(" + ", ".join(f"st.{k} >= 0, {k}" for k in range(n, 0, -1)) + ", 0) AS lvl"
    start = "multiIf(" + ", ".join(f"lvl = {k}, st.{k}" for k in range(n, 0, -1)) + ", -1)"
    times = [f"if(lvl >= 1, {start}, NULL) AS t1"]
    times += [
        f"if(lvl >= {i}, bitShiftRight(arrayFirst(x -> {s} = {i} AND {t} >= t{i - 1}, a), 4), NULL) AS t{i}"
        for i in range(2, n + 1)
    ]
    user, user_name = _user(query, tables, bind)
    return (
        f"SELECT {lvl}, {', '.join(times)}, {_step_value(query)} FROM ("
        f"SELECT {user_name}, arraySort(groupArrayIf(bitOr(bitShiftLeft({TS_MS}, 4), step), step > 0)) AS a, "
        f"arrayFold({fold}, a, {init}) AS st, "
        f"{breakdown} AS bd0 FROM (SELECT {user}, ts, {_breakdown_column(query, bind)}{step_of} AS step "
        f"FROM {tables.events} WHERE {where}) GROUP BY {user_name})"
    )


def let(name: str, value: str, body: str) -> str:
    """`body` with `name` bound to `value`, evaluated once: `arrayMap(name -> body, [value])[1]`. An alias
    (`value AS name`) does the same at run time, but ClickHouse's analyzer copies an alias's expression into
    every place that names it: in the general fold with exclusions, aliases nested three lambdas deep made
    a tree that took 0.5–0.9 s to plan on any amount of data (with lets 0.06–0.1 s, and 0.94x the run time
    at 2M events). The plain general fold keeps its aliases: its tree is smaller (0.1 s to plan), and lets
    made it 1.47x slower to run (docs/benchmarks.md)."""
    return f"arrayMap({name} -> {body}, [{value}])[1]"


def closed_general_per_user(query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER) -> str:
    """Closed funnel when an event may match several steps: events of one millisecond form a group.

    Each group becomes (t, cov): `cov` lists the sets of steps (bitmasks) that the group's events can cover
    with distinct events, built by adding one event at a time. The fold then walks the groups; from level j
    a chain moves to level k in a group at time t when the group covers steps j+1..k. State is two arrays
    (f[k], P[k]) written once over all levels, so the SQL does not grow with the number of steps.
    """
    bind = Binder(params)
    n = len(query.steps)
    conditions = [step_sql(step, bind) for step in query.steps]
    where, breakdown = _scan(query, bind, "mask > 0", lambda k: f"bitAnd(mask, {1 << (k - 1)}) != 0")
    to_end, window = bind(query.to_end_ms, "Int64"), bind(query.window_ms, "Int64")
    bits = "[" + ", ".join(f"toUInt16({1 << i})" for i in range(n)) + "]"
    add_event = (
        f"(c, e) -> arrayDistinct(arrayConcat(c, arrayFlatten(arrayMap(b -> arrayMap(s -> bitOr(s, b), "
        f"arrayFilter(s -> bitAnd(s, b) = 0, c)), arrayFilter(b -> bitAnd(e.2, b) != 0, {bits})))))"
    )
    groups = "arraySplit((x, i) -> x.1 != a[i - 1].1, a, arrayEnumerate(a))"
    covered = f"arrayMap(g -> (g[1].1, arrayFold({add_event}, g, [toUInt16(0)])), {groups})"
    # For level k (1-based), the candidate start from each level j in 0..k-1 (j = 0: a new start at t).
    candidates = (
        f"arrayMap(j -> if(has(x.2, bitShiftLeft(toUInt16(1), k) - bitShiftLeft(toUInt16(1), j)) AND "
        f"if(j = 0, x.1 <= {to_end}, acc.1[j] >= 0 AND x.1 - acc.1[j] <= {window}), if(j = 0, x.1, acc.1[j]), -1), "
        f"range(toUInt64(k)))"
    )
    # On equal starts prefer the chain that got furthest before this group: its times are earlier.
    step_level = (
        f"arrayMap(k -> ({candidates} AS cands_, arrayMax(cands_) AS best_, best_ > acc.1[k] AS moved_, "
        f"toUInt64(arrayLastIndex(v -> v = best_, cands_) - 1) AS src_, "
        f"if(moved_, best_, acc.1[k]), "
        f"if(moved_, arrayConcat(arraySlice(acc.2[src_], 1, src_), arrayWithConstant(k - src_, x.1)), acc.2[k])), "
        f"range(1, {n + 1}))"
    )
    fold = (
        f"(acc, x) -> ({step_level} AS levels_, (arrayMap(v -> v.5, levels_), arrayMap(v -> v.6, levels_))).2"
    )
    init = f"(arrayWithConstant({n}, toInt64(-1)), arrayWithConstant({n}, CAST([], 'Array(Int64)')))"
    mask = " + ".join(f"toUInt16({c}) * {1 << i}" for i, c in enumerate(conditions))
    times = ", ".join(f"if(lvl >= {i}, st.2[lvl][{i}], NULL) AS t{i}" for i in range(1, n + 1))
    user, user_name = _user(query, tables, bind)
    return (
        f"SELECT arrayCount(v -> v >= 0, st.1) AS lvl, {times}, {_step_value(query)} FROM ("
        f"SELECT {user_name}, arraySort(groupArrayIf(({TS_MS}, mask), mask > 0)) AS a, "
        f"arrayFold({fold}, {covered}, {init}) AS st, {breakdown} AS bd0 "
        f"FROM (SELECT {user}, ts, {_breakdown_column(query, bind)}toUInt16({mask}) AS mask FROM {tables.events} WHERE {where}) "
        f"GROUP BY {user_name})"
    )


def strict_per_user(query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER) -> str:
    """Strict funnel: closed, and each step is the user's very next event after the previous step.

    Every event of the user in the scan range is folded, not only step events: an element is
    (ms << 16) | mask, `mask` the steps the event matches (0 for any other event), so sorting by (time,
    mask) is a plain integer sort and puts an other event first within its millisecond. A strict chain
    is a run of consecutive elements, so the chain reaching level k at an event is unique: `L_k`, its
    start (-1 when the events before it do not match steps 1..k-1), moves up one level per event or is
    cut. `B_k` keeps the latest start of any chain that reached level k, and `P_k` the position of the
    event where it did (the first such chain on equal starts: its times are the earliest); the path is
    the events P_lvl - lvl + 1 .. P_lvl.
    """
    bind = Binder(params)
    n = len(query.steps)
    conditions = [step_sql(step, bind) for step in query.steps]
    to_end, window = bind(query.to_end_ms, "Int64"), bind(query.window_ms, "Int64")
    where, breakdown = _scan(query, bind, "1", lambda k: f"bitAnd(mask, {1 << (k - 1)}) != 0")
    t, m = "bitShiftRight(x, 16)", "bitAnd(x, 65535)"
    # acc.1: position; acc.2..n+1: L_k; acc.n+2..2n+1: B_k; acc.2n+2..3n+1: P_k
    live = [f"if(bitAnd({m}, 1) != 0 AND {t} <= {to_end}, {t}, -1)"]
    live += [
        f"if(bitAnd({m}, {1 << (k - 1)}) != 0 AND acc.{k} >= 0 AND {t} - acc.{k} <= {window}, acc.{k}, -1)"
        for k in range(2, n + 1)
    ]
    best = [f"if(l{k}_ > acc.{n + 1 + k}, l{k}_, acc.{n + 1 + k})" for k in range(1, n + 1)]
    where_best = [f"if(l{k}_ > acc.{n + 1 + k}, acc.1 + 1, acc.{2 * n + 1 + k})" for k in range(1, n + 1)]
    named = ", ".join(f"{expr} AS l{k}_" for k, expr in enumerate(live, 1))
    fold = (
        f"(acc, x) -> tupleElement(({named}, (acc.1 + 1, {', '.join(f'l{k}_' for k in range(1, n + 1))}, "
        f"{', '.join(best + where_best)})), {n + 1})"
    )
    init = (
        "(toUInt64(0), "
        + ", ".join("toInt64(-1)" for _ in range(2 * n))
        + ", "
        + ", ".join("toUInt64(0)" for _ in range(n))
        + ")"
    )
    lvl = "multiIf(" + ", ".join(f"st.{n + 1 + k} >= 0, {k}" for k in range(n, 0, -1)) + ", 0) AS lvl"
    end = "(multiIf(" + ", ".join(f"lvl = {k}, st.{2 * n + 1 + k}" for k in range(n, 0, -1)) + ", 0) AS end_)"
    times = [f"if(lvl >= 1, bitShiftRight(a[{end} - lvl + 1], 16), NULL) AS t1"]
    times += [
        f"if(lvl >= {i}, bitShiftRight(a[end_ - lvl + {i}], 16), NULL) AS t{i}" for i in range(2, n + 1)
    ]
    mask = " + ".join(f"toInt64({c}) * {1 << i}" for i, c in enumerate(conditions))
    if per_value(query):  # an event of another value matches no step: its mask is cleared, so it sorts first
        parts = (
            f"groupArray(bitOr(bitShiftLeft({TS_MS}, 16), mask)) AS e_, groupArray(h_) AS hs_",
            f"arrayFilter((h, x) -> bitAnd(x, 1) != 0 AND bitShiftRight(x, 16) <= {to_end}, hs_, e_)",
            "arraySort(arrayMap((x, h) -> if(h = v_, x, bitShiftLeft(bitShiftRight(x, 16), 16)), e_, hs_))",
            f"arrayFold({fold}, a, {init}) AS st",
            breakdown,
        )
        columns = f"ts, {_breakdown_column(query, bind)}{mask} AS mask"
        rows = _by_value(query, tables, bind, parts, columns, where)
        return f"SELECT {lvl}, {', '.join(times)}, {_step_value(query)} FROM ({rows})"
    user, user_name = _user(query, tables, bind)
    return (
        f"SELECT {lvl}, {', '.join(times)}, {_step_value(query)} FROM ("
        f"SELECT {user_name}, arraySort(groupArray(bitOr(bitShiftLeft({TS_MS}, 16), mask))) AS a, "
        f"arrayFold({fold}, a, {init}) AS st, {breakdown} AS bd0 "
        f"FROM (SELECT {user}, ts, {_breakdown_column(query, bind)}{mask} AS mask FROM {tables.events} WHERE {where}) "
        f"GROUP BY {user_name})"
    )


def closed_exclusions_per_user(query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER) -> str:
    """Closed funnel with exclusion steps (exclusive steps): the one-event-at-a-time fold, with caps.

    An exclusion e = (f, g) disqualifies a chain when one of its events is in (t_f, t_g] (docs/semantics.md).
    Elements are (ms << 16) | code: a step event's code is 1024 + step, an exclusion event's the bitmask of
    the exclusions it matches (an event matching both gives both elements), so within a millisecond the
    exclusion elements come first. An exclusion element at t therefore finds every chain at a level in
    [f, g - 1] with t_f < t: all of them are disqualified from reaching g, and only reach g - 1 now (their
    cap). Chains so capped together share their future, so the latest start still dominates within a cap:
    the state keeps, for each cap c an exclusion can set (g - 1) and n, and each level k <= c, the chain
    with the latest start at level k whose cap is at least c: its start and its times (t2..tk). A later
    match of step f starts a fresh chain there (it re-arms). A chain is replaced only by a later start, so
    of the chains with the winning start the state keeps the first to get there, the earliest at every
    step, which is the path the medians measure. The times ride in the fold, unlike in
    `closed_exclusive_per_user`: with exclusions the first step event after the previous one may not be on
    an admissible chain, and a second fold to find the path cost four times the funnel.
    """
    bind = Binder(params)
    n = len(query.steps)
    exclusions = query.exclusions
    conditions = [step_sql(step, bind) for step in query.steps]
    excluded = [step_sql(exclusion.step, bind) for exclusion in exclusions]
    to_end, window = bind(query.to_end_ms, "Int64"), bind(query.window_ms, "Int64")
    where, breakdown = _scan(query, bind, "step > 0 OR xm > 0", lambda k: f"step = {k}")
    t, code = "bitShiftRight(x, 16)", "bitAnd(x, 65535)"
    caps = sorted({exclusion.to_step - 1 for exclusion in exclusions} | {n})
    states = [(cap, k) for cap in caps for k in range(1, cap + 1)]
    at: dict[tuple[int, int, int], int] = {}  # (cap, level, j) → the state's field: j = 1 the start, else t_j
    for cap, k in states:
        for j in range(1, k + 1):
            at[(cap, k, j)] = len(at) + 1
    moves, out = [], []
    for cap, k in states:
        start = f"acc.{at[(cap, k, 1)]}"
        if k == 1:
            moves.append(f"{code} = 1025 AND {t} > {start}")
        else:
            prev = f"acc.{at[(cap, k - 1, 1)]}"
            moves.append(
                f"{code} = {1024 + k} AND {prev} >= 0 AND {t} - {prev} <= {window} AND {prev} > {start}"
            )
        move = f"m{len(moves)}_"
        poison = sum(1 << e for e, x in enumerate(exclusions) if x.from_step <= k < x.to_step <= cap)
        new_start = t if k == 1 else f"acc.{at[(cap, k - 1, 1)]}"
        if poison:
            out.append(
                f"if({code} < 1024 AND bitAnd({code}, {poison}) != 0, -1, if({move}, {new_start}, {start}))"
            )
        else:
            out.append(f"if({move}, {new_start}, {start})")
        out += [f"if({move}, acc.{at[(cap, k - 1, j)]}, acc.{at[(cap, k, j)]})" for j in range(2, k)]
        if k > 1:
            out.append(f"if({move}, {t}, acc.{at[(cap, k, k)]})")
    named = ", ".join(f"{expr} AS m{i}_" for i, expr in enumerate(moves, 1))
    fold = f"(acc, x) -> tupleElement(({named}, (" + ", ".join(out) + f")), {len(moves) + 1})"
    init = "(" + ", ".join("toInt64(-1)" for _ in at) + ")"
    widest = {k: min(cap for cap in caps if cap >= k) for k in range(1, n + 1)}  # the state with every chain
    lvl = (
        "multiIf("
        + ", ".join(f"st.{at[(widest[k], k, 1)]} >= 0, {k}" for k in range(n, 0, -1))
        + ", 0) AS lvl"
    )
    times = []
    for j in range(1, n + 1):
        at_level = ", ".join(f"lvl = {k}, st.{at[(widest[k], k, j)]}" for k in range(n, j - 1, -1))
        times.append(f"if(lvl >= {j}, multiIf({at_level}, -1), NULL) AS t{j}")
    step_of = (
        f"multiIf({conditions[0]} AND {TS_MS} <= {to_end}, 1, "
        + "".join(f"{c}, {i + 1}, " for i, c in enumerate(conditions) if i)
        + "0)"
    )
    mask = " + ".join(f"toInt64({c}) * {1 << e}" for e, c in enumerate(excluded))
    element = f"bitShiftLeft({TS_MS}, 16)"
    if per_value(query):  # the value's step elements and every exclusion element (code < 1024)
        parts = (
            f"groupArrayIf(bitOr({element}, 1024 + step), step > 0) AS s_, groupArrayIf(h_, step > 0) AS hs_, "
            f"groupArrayIf(bitOr({element}, xm), xm > 0) AS x_",
            "arrayFilter((h, x) -> bitAnd(x, 2047) = 1025, hs_, s_)",
            "arraySort(arrayConcat(arrayFilter((x, h) -> h = v_, s_, hs_), x_))",
            f"arrayFold({fold}, a, {init}) AS st",
            breakdown,
        )
        columns = f"ts, {_breakdown_column(query, bind)}{step_of} AS step, {mask} AS xm"
        rows = _by_value(query, tables, bind, parts, columns, where)
        return f"SELECT {lvl}, {', '.join(times)}, {_step_value(query)} FROM ({rows})"
    user, user_name = _user(query, tables, bind)
    return (
        f"SELECT {lvl}, {', '.join(times)}, {_step_value(query)} FROM ("
        f"SELECT {user_name}, arraySort(arrayConcat(groupArrayIf(bitOr({element}, 1024 + step), step > 0), "
        f"groupArrayIf(bitOr({element}, xm), xm > 0))) AS a, "
        f"arrayFold({fold}, a, {init}) AS st, "
        f"{breakdown} AS bd0 FROM (SELECT {user}, ts, {_breakdown_column(query, bind)}{step_of} AS step, {mask} AS xm "
        f"FROM {tables.events} WHERE {where}) GROUP BY {user_name})"
    )


def closed_general_exclusions_per_user(
    query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER
) -> str:
    """Closed funnel with exclusion steps when an event may match several steps: `closed_general_per_user`'s
    fold over millisecond groups, once per cap (as in `closed_exclusions_per_user`).

    A group is (t, cov, xm): `xm` the exclusions its events match. Before the group's steps move any chain,
    the chains of each cap class at a level an exclusion in `xm` covers (f <= k < g <= the class's cap) are
    dropped from it (they stay in the classes below, whose cap is under g), which puts an exclusion before
    the step events of its millisecond. Then each class moves its chains as the plain fold does, never past
    its cap, carrying each level's path.
    """
    bind = Binder(params)
    n = len(query.steps)
    exclusions = query.exclusions
    conditions = [step_sql(step, bind) for step in query.steps]
    excluded = [step_sql(exclusion.step, bind) for exclusion in exclusions]
    where, breakdown = _scan(
        query, bind, "mask > 0 OR xm > 0", lambda k: f"bitAnd(mask, {1 << (k - 1)}) != 0"
    )
    to_end, window = bind(query.to_end_ms, "Int64"), bind(query.window_ms, "Int64")
    caps = sorted({exclusion.to_step - 1 for exclusion in exclusions} | {n})
    poison = [
        [
            sum(1 << e for e, x in enumerate(exclusions) if x.from_step <= k < x.to_step <= cap)
            for k in range(1, n + 1)
        ]
        for cap in caps
    ]
    poison_sql = "[" + ", ".join("[" + ", ".join(f"toUInt16({m})" for m in row) + "]" for row in poison) + "]"
    caps_sql = "[" + ", ".join(str(cap) for cap in caps) + "]"
    bits = "[" + ", ".join(f"toUInt16({1 << i})" for i in range(n)) + "]"
    add_event = (
        f"(c, e) -> arrayDistinct(arrayConcat(c, arrayFlatten(arrayMap(b -> arrayMap(s -> bitOr(s, b), "
        f"arrayFilter(s -> bitAnd(s, b) = 0, c)), arrayFilter(b -> bitAnd(e.2, b) != 0, {bits})))))"
    )
    groups = "arraySplit((x, i) -> x.1 != a[i - 1].1, a, arrayEnumerate(a))"
    covered = (
        f"arrayMap(g -> (g[1].1, arrayFold({add_event}, g, [toUInt16(0)]), "
        f"arrayReduce('groupBitOr', arrayMap(e -> e.3, g))), {groups})"
    )
    # Each class ci's levels after the group's exclusions: its chains an exclusion covers are gone.
    kept = (
        f"arrayMap((fc, ci) -> arrayMap((v, k) -> if(bitAnd(x.3, {poison_sql}[ci][k]) != 0, toInt64(-1), v), "
        f"fc, range(1, {n + 1})), acc.1, range(1, {len(caps) + 1}))"
    )
    candidates = (
        f"arrayMap(j -> if(k <= {caps_sql}[ci] AND "
        f"has(x.2, bitShiftLeft(toUInt16(1), k) - bitShiftLeft(toUInt16(1), j)) AND "
        f"if(j = 0, x.1 <= {to_end}, kept_[ci][j] >= 0 AND x.1 - kept_[ci][j] <= {window}), "
        f"if(j = 0, x.1, kept_[ci][j]), -1), range(toUInt64(k)))"
    )
    moved = "best_ > kept_[ci][k]"
    level = (
        f"(if({moved}, best_, kept_[ci][k]), "
        f"if({moved}, arrayConcat(arraySlice(acc.2[ci][src_], 1, src_), arrayWithConstant(k - src_, x.1)), "
        f"acc.2[ci][k]))"
    )
    source = "toUInt64(arrayLastIndex(v -> v = best_, cands_) - 1)"
    step_level = (
        f"arrayMap(k -> {let('cands_', candidates, let('best_', 'arrayMax(cands_)', let('src_', source, level)))}, "
        f"range(1, {n + 1}))"
    )
    per_class = let("levels_", step_level, "(arrayMap(v -> v.1, levels_), arrayMap(v -> v.2, levels_))")
    classes = f"arrayMap(ci -> {per_class}, range(1, {len(caps) + 1}))"
    states = let("classes_", classes, "(arrayMap(c -> c.1, classes_), arrayMap(c -> c.2, classes_))")
    fold = f"(acc, x) -> {let('kept_', kept, states)}"
    init = (
        f"(arrayWithConstant({len(caps)}, arrayWithConstant({n}, toInt64(-1))), "
        f"arrayWithConstant({len(caps)}, arrayWithConstant({n}, CAST([], 'Array(Int64)'))))"
    )
    widest = [caps.index(min(cap for cap in caps if cap >= k)) + 1 for k in range(1, n + 1)]
    lvl = (
        "multiIf("
        + ", ".join(f"st.1[{widest[k - 1]}][{k}] >= 0, {k}" for k in range(n, 0, -1))
        + ", 0) AS lvl"
    )
    path = (
        "multiIf("
        + ", ".join(f"lvl = {k}, st.2[{widest[k - 1]}][{k}]" for k in range(n, 0, -1))
        + ", []) AS path_"
    )
    times = ", ".join(f"if(lvl >= {i}, path_[{i}], NULL) AS t{i}" for i in range(1, n + 1))
    mask = " + ".join(f"toUInt16({c}) * {1 << i}" for i, c in enumerate(conditions))
    xmask = " + ".join(f"toUInt16({c}) * {1 << e}" for e, c in enumerate(excluded))
    if per_value(query):  # another value's events keep only their exclusions
        parts = (
            f"groupArrayIf(({TS_MS}, mask, xm), mask > 0 OR xm > 0) AS all_, "
            "groupArrayIf(h_, mask > 0 OR xm > 0) AS hs_",
            f"arrayFilter((h, x) -> bitAnd(x.2, 1) != 0 AND x.1 <= {to_end}, hs_, all_)",
            "arraySort(arrayFilter(x -> x.2 > 0 OR x.3 > 0, "
            "arrayMap((x, h) -> (x.1, if(h = v_, x.2, toUInt16(0)), x.3), all_, hs_)))",
            f"arrayFold({fold}, {covered}, {init}) AS st",
            breakdown,
        )
        columns = f"ts, {_breakdown_column(query, bind)}toUInt16({mask}) AS mask, toUInt16({xmask}) AS xm"
        rows = _by_value(query, tables, bind, parts, columns, where)
        return (
            f"SELECT lvl, {times}, {_step_value(query)} FROM (SELECT held_, {lvl}, {path}, bd0 FROM ({rows}))"
        )
    user, user_name = _user(query, tables, bind)
    return (
        f"SELECT lvl, {times}, {_step_value(query)} FROM (SELECT {user_name}, {lvl}, {path}, bd0 FROM ("
        f"SELECT {user_name}, arraySort(groupArrayIf(({TS_MS}, mask, xm), mask > 0 OR xm > 0)) AS a, "
        f"arrayFold({fold}, {covered}, {init}) AS st, {breakdown} AS bd0 "
        f"FROM (SELECT {user}, ts, {_breakdown_column(query, bind)}toUInt16({mask}) AS mask, toUInt16({xmask}) AS xm "
        f"FROM {tables.events} WHERE {where}) GROUP BY {user_name}))"
    )


def open_per_user(query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER) -> str:
    """Open funnel: the first time each step fired; step 1 inside the date range, others in the scan."""
    bind = Binder(params)
    n = len(query.steps)
    matches = ", ".join(f"{step_sql(step, bind)} AS m{i}" for i, step in enumerate(query.steps, 1))
    to_end = bind(query.to_end_ms, "Int64")
    where, breakdown = _scan(query, bind, " OR ".join(f"m{i}" for i in range(1, n + 1)), lambda k: f"m{k}")
    firsts = [f"minOrNullIf({TS_MS}, m1 AND {TS_MS} <= {to_end}) AS t1"]
    firsts += [f"minOrNullIf({TS_MS}, m{i}) AS t{i}" for i in range(2, n + 1)]
    lvl = "multiIf(" + ", ".join(f"t{k} IS NULL, {k - 1}" for k in range(1, n + 1)) + f", {n}) AS lvl"
    user, user_name = _user(query, tables, bind)
    return (
        f"SELECT {lvl}, {', '.join(f't{k}' for k in range(1, n + 1))}, {_step_value(query)} FROM ("
        f"SELECT {user_name}, {', '.join(firsts)}, {breakdown} AS bd0 FROM ("
        f"SELECT {user}, ts, {_breakdown_column(query, bind)}{matches} FROM {tables.events} WHERE {where}) GROUP BY {user_name})"
    )


def held_per_user(query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER) -> str:
    """Any funnel with `hold_constant`: the funnel's own per-user query once per user and held value (a
    closed or open funnel's `_user` groups by both; a strict one or one with exclusions, whose values need
    all the user's events, repeats each user's collected events per value: `_by_value`), then per user the best of its values' paths: the furthest level, then
    the latest start, then the earliest times, as one fold over all of them would choose among chains of
    one value. The breakdown value: by first or last touch, the user's over all their groups; with
    `step:K`, the chosen path's own (among equal paths, a value before none, then the smallest)."""
    n = len(query.steps)
    if query.funnel_type == "open":
        inner = open_per_user(query, params, tables)
    elif query.funnel_type == "strict":
        inner = strict_per_user(query, params, tables)
    elif query.exclusions:
        exclusions = (
            closed_exclusions_per_user if query.steps_exclusive else closed_general_exclusions_per_user
        )
        inner = exclusions(query, params, tables)
    else:
        inner = (closed_exclusive_per_user if query.steps_exclusive else closed_general_per_user)(
            query, params, tables
        )
    user_name = user_column(query)
    row = ", ".join(["lvl", *(f"t{k}" for k in range(1, n + 1))])
    times = ", ".join(f"best_.{k + 1} AS t{k}" for k in range(1, n + 1))
    if query.attribution_step is None:
        order = ", ".join(["lvl", "ifNull(t1, 0)", *(f"-ifNull(t{k}, 0)" for k in range(2, n + 1))])
        # The user's value over all their groups: the earliest (first touch) or latest (last touch) of theirs.
        value = f"tupleElement({_touch(query)}If(bd0, bd0.2 != ''), 2)" if query.breakdown else "''"
        chosen = f"argMax(({row}), ({order})) AS best_, {value} AS bd0"
        picked = "bd0"
    else:  # the winning group's own value, carried with its path
        rank = ["-lvl", "-ifNull(t1, 0)", *(f"ifNull(t{k}, 0)" for k in range(2, n + 1)), "bd0 = ''", "bd0"]
        chosen = f"argMin(({row}, bd0), ({', '.join(rank)})) AS best_"
        picked = f"best_.{n + 2} AS bd0"
    return (
        f"SELECT lvl, {', '.join(f't{k}' for k in range(1, n + 1))}, bd0 FROM ("
        f"SELECT {user_name}, best_.1 AS lvl, {times}, {picked} FROM ("
        f"SELECT tupleElement(user_, 1) AS {user_name}, {chosen} "
        f"FROM (SELECT held_ AS user_, {inner.removeprefix('SELECT ')}) GROUP BY {user_name}))"
    )


def person_per_user(query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER) -> str:
    """A funnel broken down by a property of the identified model (`breakdown=person.<key>`): the funnel's
    own per-user rows without a breakdown, each joined by its user to the value of `<key>` on the user's
    latest identify event carrying one (`identified_sql`); with `aggregate_by`, each group to its own.

    The user column is in scope in every builder's outer FROM (the subquery grouping by it, as
    `people.with_user` relies on), so it is added there, and the join is a plain hash join whose right side
    (one row per identified user) is small next to the funnel's users."""
    plain = replace(query, breakdown=None, breakdown_attribution="first_touch")
    inner = choose_per_user(plain)(plain, params, tables)
    user_name = user_column(query)
    times = ", ".join(f"t{k}" for k in range(1, len(query.steps) + 1))
    return (
        f"SELECT lvl, {times}, bd0 FROM (SELECT {user_name}, lvl, {times}, ifNull(pv_, '') AS bd0 FROM ("
        f"SELECT {user_name}, {inner.removeprefix('SELECT ')}) AS funnel_ "
        f"LEFT JOIN ({identified_sql(query, params, tables)}) AS identified_ USING ({user_name}))"
    )


def identified_sql(query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER) -> str:
    """Per user (`_user`'s: the person, stitched), the value `pv_` of the identified model's property
    `query.breakdown_person`: on the latest identify event with a non-empty value (ties in one millisecond:
    the largest value), among every identify event up to the end of the scan, however early (a customer
    identified last year still has their plan), read from the identify events' own table
    (`tables.identifies`, `funnels.store.events`), not from every event before the scan's end. Identifies
    merge properties key by key, last write wins, so this is the value the person's model has for that key,
    by event time (docs/semantics.md, "Breakdown", says where it differs from an automation instance's
    stored properties).

    With `aggregate_by`, per group, the group's own value: its instance's identify events, which the
    automation API stores under the instance's primary id (`user_key`), and a group is the hash of that id
    (`funnels.store.groups`), so the key's hash joins them directly, stitched or raw alike (no lookup: the
    group's properties are its own, not a member's)."""
    bind = Binder(params)
    key = query.breakdown_person
    assert key is not None
    own = ""
    if query.aggregate_by:  # the group's own identifies: stored under its primary id, whose hash names it
        user, user_name = "sipHash64(user_key) AS person", user_column(query)
        own = _own_key(query, tables, bind)
    else:
        user, user_name = _user(replace(query, hold_constant=()), tables)
    return (
        f"SELECT {user_name}, tupleElement(max(({TS_MS}, v_)), 2) AS pv_ FROM ("
        f"SELECT {user}, ts, {property_text(bind(key, 'String'))} AS v_ FROM {tables.identifies} "
        f"WHERE ts <= fromUnixTimestamp64Milli({bind(query.scan_end_ms, 'Int64')}, 'UTC') {own}"
        f"AND v_ != '') GROUP BY {user_name}"
    )


def _own_key(query: FunnelQuery, tables: Tables, bind: Binder) -> str:
    """With `aggregate_by`, a condition on an identify row's key hash (`person`): the primary id of a group,
    which is a member of itself by each of its ids (`funnels.store.groups`). Not needed for the answer (the
    join by the group's hash drops other rows); it keeps the rows to aggregate, and the join's right side,
    to the groups' own, one dictionary probe per identify row before its property is read (about 10–15%
    faster at 0.2M events, `bench/run.py`'s data)."""
    model, groups = bind(query.aggregate_by, "String"), tables.groups
    key = f"sipHash64({model}, person)"
    return (
        f"AND (dictGetOrDefault('{groups}', 'one', {key}, toUInt64(0)) = person "
        f"OR has(dictGetOrDefault('{groups}', 'many', {key}, emptyArrayUInt64()), person)) "
    )


def choose_per_user(query: FunnelQuery) -> PerUser:
    if query.breakdown_person is not None:
        return person_per_user
    if query.hold_constant:
        return held_per_user
    if query.funnel_type == "open":
        return open_per_user
    if query.funnel_type == "strict":
        return strict_per_user
    if query.exclusions:
        return closed_exclusions_per_user if query.steps_exclusive else closed_general_exclusions_per_user
    return closed_exclusive_per_user if query.steps_exclusive else closed_general_per_user


def _counts_and_medians(n: int) -> tuple[list[str], list[str]]:
    """Users per step, and each median as a template: `{}` is "" for the value, "State" for its state."""
    counts = [f"countIf(lvl >= {k}) AS u{k}" for k in range(1, n + 1)]
    medians = [
        f"quantileExactInclusive{{}}If(0.5)(t{k} - t{k - 1}, lvl >= {k}) AS mp{k}" for k in range(2, n + 1)
    ]
    medians += [f"quantileExactInclusive{{}}If(0.5)(t{k} - t1, lvl >= {k}) AS ms{k}" for k in range(2, n + 1)]
    return counts, medians


def _medians(n: int, function: str) -> list[str]:
    """Each median state column through `function` (a -Merge or -MergeState combinator), under its name."""
    names = [f"mp{k}" for k in range(2, n + 1)] + [f"ms{k}" for k in range(2, n + 1)]
    return [f"{function}(0.5)({name}) AS {name}" for name in names]


def _ranked(query: FunnelQuery, values: str, params: Params) -> str:
    """The rows of a breakdown: `values` gives one row per value (bd, u1..un and the median states), the
    top N by step-1 users are kept and the rest merged into 'Others', ordered by rank."""
    n = len(query.steps)
    merged = [f"sum(u{k}) AS u{k}" for k in range(1, n + 1)] + _medians(n, "quantileExactInclusiveMerge")
    top_n = f"{{p{len(params)}:UInt32}}"
    params[f"p{len(params)}"] = query.breakdown_top_n
    return (
        f"SELECT if(rnk <= {top_n}, bd, 'Others') AS bucket, {', '.join(merged)} FROM ("
        f"SELECT *, row_number() OVER (ORDER BY u1 DESC, bd ASC) AS rnk FROM ("
        f"{values})) GROUP BY bucket ORDER BY min(rnk)"
    )


def funnel_sql(query: FunnelQuery, tables: Tables = ONE_SERVER) -> tuple[str, Params]:
    """The whole funnel query: one row per kept breakdown value (one row, possibly of zeros, without).

    Columns: bucket, then u1..un (users reaching each step), then mp2..mpn and ms2..msn (exact median
    milliseconds from the previous step and from the start), ordered by rank. Without a breakdown the
    medians are computed directly; with one, per-value median states are merged for `Others`.
    """
    params: Params = {}
    if not query.breakdown:
        per_user = choose_per_user(query)(query, params, sampled_tables(query, tables, params))
        counts, medians = _counts_and_medians(len(query.steps))
        direct = ", ".join(counts + [median.format("") for median in medians])
        return f"SELECT '' AS bucket, {direct} FROM ({per_user}) WHERE lvl >= 1", params
    return _ranked(query, shard_funnel_sql(query, params, tables), params), params


def shard_funnel_sql(query: FunnelQuery, params: Params, tables: Tables = ONE_SERVER) -> str:
    """What one shard of a cluster computes over its own events table (`tables.events`; over the whole
    table, the inner part of `funnel_sql` with a breakdown): per breakdown value ('(none)' for users
    without one; the one value '(none)' without a breakdown), u1..un and the median states mp2..mpn,
    ms2..msn. One row per value, never per user: each user's fold runs where the user's rows are. With
    `sample`, over the users in the sample (`sampled_tables`)."""
    per_user = choose_per_user(query)(query, params, sampled_tables(query, tables, params))
    counts, medians = _counts_and_medians(len(query.steps))
    states = [median.format("State") for median in medians]
    return (
        f"SELECT if(bd0 = '', '(none)', bd0) AS bd, {', '.join(counts + states)} "
        f"FROM ({per_user}) WHERE lvl >= 1 GROUP BY bd"
    )


def merged_funnel_sql(query: FunnelQuery, shard_rows: str, params: Params) -> str:
    """The initiator's half of a funnel over shards: `shard_rows` is a table expression giving every shard's
    `shard_funnel_sql` rows; their counts are summed and their median states merged per value, then ranked
    as `funnel_sql` ranks (the same columns, so `buckets_from_rows` reads either)."""
    n = len(query.steps)
    sums = [f"sum(u{k}) AS u{k}" for k in range(1, n + 1)]
    if not query.breakdown:
        medians = _medians(n, "quantileExactInclusiveMerge")
        return f"SELECT '' AS bucket, {', '.join(sums + medians)} FROM {shard_rows}"
    states = _medians(n, "quantileExactInclusiveMergeState")
    return _ranked(query, f"SELECT bd, {', '.join(sums + states)} FROM {shard_rows} GROUP BY bd", params)


def cluster_tables(layout: ClusterLayout) -> Tables:
    """What a shard reads: its own events table, and the persons and memberships dictionaries by their
    database (made on every node with the layout, `funnels.store.cluster`)."""
    db = layout.database
    return Tables(
        events=layout.shard_events,
        persons=f"{db}.{PERSONS_DICTIONARY}",
        groups=f"{db}.{GROUPS_DICTIONARY}",
        identifies=f"{db}.{SHARD_IDENTIFIES}",
    )


def cluster_funnel_sql(query: FunnelQuery, layout: ClusterLayout) -> tuple[str, Params]:
    """A raw funnel on a cluster whose shards each hold whole user keys (`funnels.store.cluster`).

    How it works: `cluster(NAME, view(S))` sends the per-shard query S (`shard_funnel_sql` over the shard's
    own `events_local`) to one replica of every shard; each folds its users and returns one row per
    breakdown value with counts and median states, and the initiator merges those rows
    (`merged_funnel_sql`). Exact because the sharding key is a hash of `user_key`: every row of a user is
    on one shard, so each user is folded whole, exactly once; counts add up, and an exact-quantile state
    holds every value, so merged states give the median over all users. Query parameters are replaced by
    their values on the initiator, before S is sent.
    """
    params: Params = {}
    shard = shard_funnel_sql(query, params, cluster_tables(layout))
    return merged_funnel_sql(query, f"cluster('{layout.cluster}', view({shard}))", params), params


def funnel_statement(query: FunnelQuery, layout: ClusterLayout | None) -> tuple[str, Params]:
    """The funnel SQL for a store: on a cluster, a raw funnel in the two-level form; a stitched one, or one
    aggregated by a model (a group's members may sit on several shards), reads the Distributed `events`
    as on one server, the shards resolving persons and groups with the dictionaries named by their
    database, and the initiator folding each person or group over the matching rows the shards send
    (docs/deploy.md)."""
    if layout is None:
        return funnel_sql(query)
    if not query.stitched and not query.aggregate_by:
        return cluster_funnel_sql(query, layout)
    return funnel_sql(query, initiator_tables(layout))


def initiator_tables(layout: ClusterLayout | None) -> Tables:
    """What a query that folds users where it runs reads: `events` (on a cluster, the Distributed table, so
    a user's rows from every shard meet), and the dictionaries (on a cluster, by their database)."""
    if layout is None:
        return ONE_SERVER
    return replace(cluster_tables(layout), events=ONE_SERVER.events, identifies=ONE_SERVER.identifies)
