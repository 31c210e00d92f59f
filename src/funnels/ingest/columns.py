"""Shared pieces of `funnels import`: the error vocabulary and the Arrow helpers both the text formats and
Parquet use to build rows for the event store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from funnels.store.events import ARROW_SCHEMA

TIMESTAMP_REQUIRED = "timestamp: is required to import an event"


USER_REQUIRED = "one of user_id or anonymous_id is required"


_HASH_KEY = "funnels-import-1"  # 16 characters: the SipHash key of content-derived event ids


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


Problems = dict[int, list[str]]  # row position in a batch -> what is wrong with it


class ImportFileError(ValueError):
    """A file that cannot be imported at all (unsupported extension, unreadable, required column missing)."""


def hash_hex(keys: np.ndarray) -> pa.Array:
    """16-hex-digit SipHash-2-4 (fixed key) of each string: the content-derived event ids."""
    hashed = pd.util.hash_array(keys, hash_key=_HASH_KEY, categorize=False)
    octets = hashed.astype(">u8").view(np.uint8).reshape(-1, 8)
    text = np.empty((len(hashed), 16), dtype=np.uint8)
    text[:, 0::2] = _HEX[octets >> 4]
    text[:, 1::2] = _HEX[octets & 15]
    offsets = np.arange(0, 16 * len(hashed) + 1, 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(hashed), pa.py_buffer(offsets), pa.py_buffer(text))


def constant_text(value: str, n: int) -> pa.Array:
    """A string array of one repeated value, built without Python objects."""
    data = value.encode()
    offsets = (
        np.arange(0, len(data) * n + 1, len(data) or 1, dtype=np.int32) if data else np.zeros(n + 1, np.int32)
    )
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def assemble(arrays: dict[str, pa.Array], n: int, received_ms: int) -> pa.Table:
    """The store's columns in `arrays` plus `received_at`; absent ones default in the store (faster inserts)."""
    columns: list[pa.Array] = []
    fields: list[pa.Field] = []
    for schema_field in ARROW_SCHEMA:
        name = schema_field.name
        if name == "ts":
            columns.append(arrays["ts"].cast(pa.int64()).cast(schema_field.type))
        elif name == "received_at":
            columns.append(pa.array(np.full(n, received_ms, dtype=np.int64)).cast(schema_field.type))
        elif name in arrays:
            columns.append(arrays[name])
        else:
            continue
        fields.append(schema_field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
