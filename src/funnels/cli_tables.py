"""What `funnels query` and `funnels catalog` print: the API's body as JSON (`--format json`), or for people a
table (`--format table`, the default), one function per endpoint's answer."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

Answer = dict[str, Any]

FUNNEL_HEADERS = {
    "conversion_from_start": "conv. from start",
    "conversion_from_previous": "conv. from prev",
    "dropoff_from_previous": "drop-off",
    "dropped_off_users": "dropped",
    "median_seconds_from_previous": "median s from prev",
    "median_seconds_from_start": "median s from start",
    "users_sampled": "in sample",
    "users_interval": "users 95%",
    "conversion_from_start_interval": "conv. from start 95%",
    "conversion_from_previous_interval": "conv. from prev 95%",
}


def show(answer: Answer, output: str, table: Callable[[Answer], Table]) -> None:
    """The answer on stdout, as JSON or as `table` makes it; what a table leaves out is said on stderr."""
    if output == "json":
        sys.stdout.write(orjson.dumps(answer).decode() + "\n")
        return
    Console(width=None if sys.stdout.isatty() else 200).print(table(answer))  # piped output: no folding
    notes = Console(stderr=True, soft_wrap=True)
    if answer.get("has_more"):
        notes.print("more rows than --limit shows", highlight=False)
    if answer.get("next_cursor"):
        notes.print(f"more on the next page: --cursor {answer['next_cursor']}", highlight=False)
    sample = answer.get("sample")
    if sample and "rate" in sample:  # a funnel answered from a sample of users (`--sample`)
        notes.print(
            f"from a sample of {sample['rate'] * 100:g}% of {sample['unit']}s ({sample['users_sampled']:,} "
            f"entered): counts × {sample['scale']:g}, ranges are {sample['confidence'] * 100:g}% intervals",
            highlight=False,
        )
    elif sample and not sample["complete"]:
        notes.print(f"from a sample: the first {sample['limit']:,} events of the step", highlight=False)


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):  # a sampled answer's interval [low, high]
        return "–".join(_cell(name, bound) for bound in value)
    if name.startswith(("conversion", "dropoff")):
        return f"{value * 100:.2f}%"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# With `compare`: the columns added from each row's change (`comparison.data`, one per row, in order).
CHANGE_HEADERS = {
    "previous_users": "prev. users",
    "users_change": "users change",
    "conversion_from_start_change_points": "conv. change (pts)",
}


def _signed(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:+,}" if isinstance(value, int) else f"{value:+,.2f}"


def funnel_table(answer: Answer) -> Table:
    """`GET /v0/funnel`: a row per step (and breakdown value), ratios as percentages; with `compare`, each
    row's previous users and the changes."""
    names = [column["name"] for column in answer["meta"]]
    comparison = answer.get("comparison")
    headers = [FUNNEL_HEADERS.get(name, name) for name in names]
    title = None
    if comparison:
        headers += list(CHANGE_HEADERS.values())
        title = f"compared with {comparison['date_from']} – {comparison['date_to']}"
    table = Table(*headers, title=title)
    for column, name in zip(table.columns, [*names, *CHANGE_HEADERS], strict=False):
        column.overflow = "fold"
        column.justify = "left" if name in ("event", "breakdown") else "right"
    changes = comparison["data"] if comparison else [None] * len(answer["data"])
    for row, change in zip(answer["data"], changes, strict=True):
        cells = [_cell(name, row[name]) for name in names]
        if change is not None:
            cells += [_cell("previous_users", change["previous_users"])]
            cells += [_signed(change[name]) for name in list(CHANGE_HEADERS)[1:]]
        table.add_row(*cells)
    return table


def saved_table(answer: Answer) -> Table:
    """`GET /v0/saved_funnels`: a row per saved funnel."""
    table = Table("id", "name", "version", "updated")
    for funnel in answer["data"]:
        table.add_row(funnel["id"], funnel["name"], str(funnel["version"]), funnel["updated"] or "")
    return table


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:,.3f}".rstrip("0").rstrip(".")


def time_to_convert_table(answer: Answer) -> Table:
    """`GET /v0/funnel/time_to_convert`: per group, users, percentiles and mean, then the histogram's users
    per bin (the bins are the same in every group)."""
    groups = answer["data"]
    title = f"{answer['from_event']} → {answer['to_event']}, seconds"
    names = [group.get("breakdown", "all") for group in groups]
    table = Table("", *names, title=title)
    for column in table.columns[1:]:
        column.justify = "right"
    table.add_row("users", *(f"{group['users']:,}" for group in groups))
    for name in ("p25", "p50", "p75", "p90", "p99", "mean"):
        table.add_row(name, *(_seconds(group[f"{name}_seconds"]) for group in groups))
    for index, bucket in enumerate(groups[0]["histogram"] if groups else []):
        low, high = bucket["from_seconds"], bucket["to_seconds"]
        label = (
            f"< {_seconds(high)}"
            if low is None
            else f"≥ {_seconds(low)}"
            if high is None
            else f"{_seconds(low)}–{_seconds(high)}"
        )
        table.add_row(label, *(f"{group['histogram'][index]['users']:,}" for group in groups))
    return table


def trends_table(answer: Answer) -> Table:
    """`GET /v0/funnel/trends`: a row per period (and breakdown value); periods still in their window
    marked open."""
    rows = answer["data"]
    breakdown = bool(rows) and "breakdown" in rows[0]
    headers = ["period", "from", "to", *(["breakdown"] if breakdown else []), "entered", "converted"]
    table = Table(*headers, "conversion", "window")
    for column in table.columns[3 + breakdown :]:
        column.justify = "right"
    for row in rows:
        table.add_row(
            row["period"],
            row["date_from"],
            row["date_to"],
            *([row["breakdown"]] if breakdown else []),
            f"{row['entered']:,}",
            f"{row['converted']:,}",
            _cell("conversion", row["conversion"]),
            "closed" if row["window_closed"] else "open",
        )
    return table


def people_table(answer: Answer) -> Table:
    """`GET /v0/funnel/people`: a row per user (this page), with the last step reached and each step's time."""
    rows = answer["data"]
    breakdown = bool(rows) and "breakdown" in rows[0]
    title = f"{answer['outcome']} at step {answer['step']} ({answer['event']}): {answer['users']:,} users"
    table = Table("user", "last step", *(["breakdown"] if breakdown else []), *answer["steps"], title=title)
    for row in rows:
        times = [time.replace("T", " ").removesuffix("Z") if time else "–" for time in row["times"]]
        table.add_row(
            row["user_key"], str(row["last_step"]), *([row["breakdown"]] if breakdown else []), *times
        )
    return table


def _rows(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(*headers)
    for row in rows:
        table.add_row(*(f"{cell:,}" if isinstance(cell, int) else str(cell) for cell in row))
    return table


def names_table(answer: Answer) -> Table:
    """`GET /v0/events/names`: the (type, event) pairs by events."""
    rows = [(row["type"], row["event"], row["count"], row["last_seen"]) for row in answer["data"]]
    return _rows(("type", "event", "events", "last seen"), rows)


def operands_table(answer: Answer) -> Table:
    """`GET /v0/events/properties`: the standard columns that have values, then the property keys."""
    operands = [("column", operand) for operand in answer["columns"] if operand["count"]]
    operands += [("property", operand) for operand in answer["properties"]]
    rows = [
        (
            kind,
            operand["operand"],
            operand["count"],
            operand["numeric"],
            ", ".join(f"{value['value']} ({value['count']:,})" for value in operand["values"]),
        )
        for kind, operand in operands
    ]
    return _rows(("kind", "operand", "events", "numeric", "top values"), rows)


def values_table(answer: Answer) -> Table:
    """`GET /v0/events/values`: one operand's values by events."""
    return _rows(("value", "events"), [(row["value"], row["count"]) for row in answer["data"]])
