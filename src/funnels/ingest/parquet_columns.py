"""The column-wise Parquet transform of `funnels import`: one record batch in, the store's Arrow table and
the problems of each bad row out, checked and converted with pyarrow.compute (no Python per value except
where noted). `importer.py` drives it batch by batch; `parquet_native.py` is the faster path it tries first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from funnels.events import MAX_ID_LENGTH, MAX_NAME_LENGTH, dumps_properties, parse_timestamp
from funnels.ingest.columns import (
    TIMESTAMP_REQUIRED,
    USER_REQUIRED,
    ImportFileError,
    Problems,
    assemble,
    constant_text,
    hash_hex,
)
from funnels.types import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, NAMED_BY_TYPE, STANDARD_COLUMNS

_ISO_FAST = (  # ISO 8601 shapes Arrow parses exactly as `datetime.fromisoformat` does; others go row by row
    r"^\d{4}-\d{2}-\d{2}(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)


def _flag(problems: Problems, mask: pa.Array, message: str | Callable[[int], str]) -> None:
    """Record `message` for every row where `mask` is true."""
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return
    for position in np.flatnonzero(mask.to_numpy(zero_copy_only=False)):
        i = int(position)
        problems.setdefault(i, []).append(message if isinstance(message, str) else message(i))


def _text(path: Path, batch: pa.RecordBatch, name: str) -> pa.Array:
    """A column as text with nulls as "" (absent); numbers and booleans spelled as the native endpoint does."""
    if name not in batch.schema.names:
        return constant_text("", batch.num_rows)
    array = batch.column(name)
    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.dictionary_decode(), kind.value_type
    try:
        if pa.types.is_floating(kind):
            values = [None if v is None or v != v else str(v) for v in array.to_pylist()]
            text = pa.array(values, pa.string())
        elif (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_integer(kind)
            or pa.types.is_boolean(kind)
        ):
            text = array.cast(pa.string())
        else:
            raise ImportFileError(
                f"{path}: column {name!r} has type {kind}; expected text, a number or a boolean"
            )
    except pa.ArrowInvalid as error:
        raise ImportFileError(f"{path}: column {name!r} is not valid text ({error})") from None
    return text.fill_null("") if text.null_count else text


def _too_long(problems: Problems, values: pa.Array, name: str, limit: int, message: str) -> None:
    """Flag values longer than `limit` characters."""
    _flag(problems, pc.greater(pc.utf8_length(values), limit), f"{name}: {message.format(limit)}")


def parquet_batch(path: Path, batch: pa.RecordBatch, received_ms: int) -> tuple[pa.Table, Problems]:
    """Validate and transform one record batch column-wise: the good rows as a store table, and the problems."""
    n = batch.num_rows
    problems: Problems = {}
    longer = "String should have at most {} characters"

    kinds = _text(path, batch, "type")
    kinds = pc.if_else(pc.equal(kinds, ""), "track", kinds)
    _too_long(problems, kinds, "type", MAX_NAME_LENGTH, longer)

    names = _text(path, batch, "event")
    unnamed = pc.equal(names, "")
    needs_name = pc.and_(unnamed, pc.invert(pc.is_in(kinds, pa.array(sorted(NAMED_BY_TYPE)))))
    _flag(problems, needs_name, lambda i: f"event (the event name) is required for type {kinds[i].as_py()!r}")
    names = pc.if_else(unnamed, kinds, names)
    _too_long(problems, names, "event", MAX_NAME_LENGTH, longer)

    user_ids, anonymous_ids = _text(path, batch, "user_id"), _text(path, batch, "anonymous_id")
    _too_long(problems, user_ids, "user_id", MAX_ID_LENGTH, "must be at most {} characters")
    _too_long(problems, anonymous_ids, "anonymous_id", MAX_ID_LENGTH, "must be at most {} characters")
    user_keys = pc.if_else(pc.equal(user_ids, ""), anonymous_ids, user_ids)
    _flag(problems, pc.equal(user_keys, ""), USER_REQUIRED)

    stamps = _timestamps(path, batch.column("timestamp"), problems)

    message_ids = _text(path, batch, "message_id")
    _too_long(problems, message_ids, "message_id", MAX_ID_LENGTH, longer)

    properties = _properties(path, batch, problems)
    arrays: dict[str, pa.Array] = {
        "type": kinds,
        "event": names,
        "user_key": user_keys,
        "user_id": user_ids,
        "anonymous_id": anonymous_ids,
        "ts": stamps,
        "properties": properties,
    }
    for column in STANDARD_COLUMNS:
        if column in batch.schema.names:
            arrays[column] = _text(path, batch, column)

    unkeyed = pc.equal(message_ids, "")
    if pc.any(unkeyed).as_py():
        hashed = hash_hex(_parquet_keys(arrays).to_numpy(zero_copy_only=False))
        arrays["event_id"] = pc.if_else(unkeyed, hashed, message_ids)
    else:
        arrays["event_id"] = message_ids

    table = assemble(arrays, n, received_ms)
    if problems:
        keep = np.ones(n, dtype=bool)
        keep[list(problems)] = False
        table = table.filter(pa.array(keep))
    return table, problems


def _parquet_keys(arrays: dict[str, pa.Array]) -> pa.Array:
    """Each row's fields joined into one string: type, name, user ids, time, properties, standard columns."""
    parts = [arrays[name] for name in ("type", "event", "user_id", "anonymous_id")]
    parts.append(pc.cast(pc.fill_null(arrays["ts"], 0), pa.string()))
    parts.append(arrays["properties"])
    parts.extend(arrays[column] for column in STANDARD_COLUMNS if column in arrays)
    return pc.binary_join_element_wise(*parts, "\x1f")


def _timestamps(path: Path, column: pa.Array, problems: Problems) -> pa.Array:
    """Epoch milliseconds (int64; null or out of range where the row is bad) from any supported column type."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.dictionary_decode(), kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return text_timestamps(column.cast(pa.string()), problems)
    if pa.types.is_timestamp(kind):
        raw = column.cast(pa.int64())
        if kind.unit == "s":
            fits = pc.and_(pc.greater_equal(raw, 0), pc.less_equal(raw, MAX_TIMESTAMP_MS // 1000))
            stamps = pc.multiply(pc.if_else(fits, raw, -1), 1000)
        else:
            stamps = _to_millis(raw, {"ms": 1, "us": 1_000, "ns": 1_000_000}[kind.unit])
    elif pa.types.is_date32(kind) or pa.types.is_date64(kind):
        days = pa.types.is_date32(kind)
        stamps = (
            pc.multiply(column.cast(pa.int32()).cast(pa.int64()), 86_400_000)
            if days
            else column.cast(pa.int64())
        )
    elif pa.types.is_integer(kind):
        if kind == pa.uint64():
            column = pc.min_element_wise(column, pa.scalar(MAX_TIMESTAMP_MS + 1, pa.uint64()))
        stamps = column.cast(pa.int64())
    elif pa.types.is_floating(kind):
        fits = pc.and_(
            pc.is_finite(column),
            pc.and_(pc.greater_equal(column, 0), pc.less_equal(column, MAX_TIMESTAMP_MS)),
        )
        stamps = pc.if_else(fits, pc.trunc(column), -1.0).cast(pa.int64())
    else:
        raise ImportFileError(
            f"{path}: column 'timestamp' has type {kind}; expected a timestamp, epoch milliseconds or ISO 8601 text"
        )
    _flag(problems, pc.is_null(column), TIMESTAMP_REQUIRED)
    _flag_range(problems, stamps)
    return stamps


def _to_millis(raw: pa.Array, per_ms: int) -> pa.Array:
    """Integer times in a finer unit to epoch ms, rounding down; anything before 1970 becomes -1."""
    if per_ms == 1:
        return raw
    return pc.divide(pc.if_else(pc.less(raw, 0), -per_ms, raw), per_ms)


def _flag_range(problems: Problems, stamps: pa.Array) -> None:
    """Flag times outside what the store holds (1970 to 2199), as `parse_timestamp` does."""
    outside = pc.or_(pc.less(stamps, MIN_TIMESTAMP_MS), pc.greater(stamps, MAX_TIMESTAMP_MS))
    _flag(problems, outside, "timestamp: must be between 1970-01-01 and 2199-12-31")


def text_timestamps(text: pa.Array, problems: Problems) -> pa.Array:
    """Text times as `parse_timestamp` reads them: epoch ms and usual ISO 8601 column-wise, others per row."""
    text = pc.utf8_trim_whitespace(text)
    stamps = pa.nulls(len(text), pa.int64())
    digits = pc.match_substring_regex(text, r"^-?\d{1,15}$")
    if pc.any(digits).as_py():
        stamps = pc.if_else(digits, pc.cast(pc.if_else(digits, text, "0"), pa.int64()), stamps)
    iso = pc.fill_null(pc.match_substring_regex(text, _ISO_FAST), False)
    if pc.any(iso).as_py():
        zoned = pc.and_(iso, pc.match_substring_regex(text, r"(Z|[+-]\d{2}:?\d{2})$"))
        for mask, target in (
            (zoned, pa.timestamp("ns", tz="UTC")),
            (pc.and_not(iso, zoned), pa.timestamp("ns")),
        ):
            if pc.any(mask).as_py():
                placeholder = "1970-01-01T00:00:00Z" if target.tz else "1970-01-01T00:00:00"
                try:
                    parsed = pc.if_else(mask, text, placeholder).cast(target).cast(pa.int64())
                except pa.ArrowInvalid:
                    continue  # an impossible date among them: the per-row parser below reads the lot
                stamps = pc.if_else(mask, _to_millis(parsed, 1_000_000), stamps)
    missing = pc.equal(pc.fill_null(text, ""), "")
    leftover = pc.and_(pc.invert(missing), pc.is_null(stamps))
    if pc.any(leftover).as_py():
        values, texts = stamps.to_pylist(), text.to_pylist()
        for position in np.flatnonzero(leftover.to_numpy(zero_copy_only=False)):
            i = int(position)
            try:
                values[i] = parse_timestamp(texts[i])
            except ValueError as error:
                problems.setdefault(i, []).append(f"timestamp: {error}")
        stamps = pa.array(values, pa.int64())
    _flag(problems, missing, TIMESTAMP_REQUIRED)
    _flag_range(problems, stamps)
    return stamps


def _properties(path: Path, batch: pa.RecordBatch, problems: Problems) -> pa.Array:
    """Properties as JSON text ("{}" if absent): text is checked and kept as given, structs/maps serialized."""
    n = batch.num_rows
    if "properties" not in batch.schema.names:
        return constant_text("{}", n)
    column = batch.column("properties")
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.dictionary_decode(), kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        text = column.cast(pa.string())
        text = pc.if_else(pc.equal(pc.fill_null(text, ""), ""), "{}", text)
        try:  # each distinct text is parsed once: event properties repeat a lot in practice
            parsed_types = set(map(type, map(orjson.loads, pc.unique(text).to_pylist())))
        except orjson.JSONDecodeError:
            parsed_types = set()
        if parsed_types != {dict}:
            _flag_json_text(text.to_pylist(), problems)
        return text
    if pa.types.is_struct(kind) or pa.types.is_map(kind):
        is_map = pa.types.is_map(kind)
        out: list[str] = []
        for i, value in enumerate(column.to_pylist()):
            try:
                out.append(dumps_properties(dict(value) if is_map else value) if value else "{}")
            except (TypeError, orjson.JSONEncodeError) as error:
                problems.setdefault(i, []).append(f"properties: cannot be stored as JSON ({error})")
                out.append("{}")
        return pa.array(out, pa.string())
    raise ImportFileError(
        f"{path}: column 'properties' has type {kind}; expected JSON text, a struct or a map"
    )


def _flag_json_text(values: list[str], problems: Problems) -> None:
    """Find the rows whose properties text is not a JSON object (the column-wide check failed)."""
    for i, value in enumerate(values):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError as error:
            problems.setdefault(i, []).append(f"properties: not valid JSON ({error})")
            continue
        if type(parsed) is not dict:
            problems.setdefault(i, []).append("properties: must be a JSON object")
