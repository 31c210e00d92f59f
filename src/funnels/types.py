"""Shared vocabulary: standard event columns, scopes and small type aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

JSONDict = dict[str, Any]

# Columns every event carries besides its properties (the analytics spec's "standard columns").
STANDARD_COLUMNS: Final[tuple[str, ...]] = (
    "origin",
    "device",
    "browser",
    "os",
    "location",
    "referrer",
    "direct",
    "ref",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "builder_codes",
    "version",
    "locale",
    "timezone",
    "page_path",
)

# Dimensions a funnel may be broken down by (the spec's allowlist).
BREAKDOWN_COLUMNS: Final[tuple[str, ...]] = (
    "device",
    "browser",
    "os",
    "location",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
)

SCOPES: Final[tuple[str, ...]] = ("events:write", "query:read", "admin")

# The special event every identify fires (automation's steps name it; analytics charts it as type `identify`).
IDENTIFY_EVENTS: Final[tuple[str, ...]] = ("onFunctionaryIdentify", "$identify")

# Event types with a default event name (the type itself); `track` needs an explicit name.
NAMED_BY_TYPE: Final[frozenset[str]] = frozenset({"page", "identify", "screen", "group", "alias"})

# Timestamps are stored in milliseconds; these bounds keep every value inside ClickHouse's DateTime64 range.
MIN_TIMESTAMP_MS: Final[int] = 0  # 1970-01-01
MAX_TIMESTAMP_MS: Final[int] = 7_258_118_399_999  # 2199-12-31 23:59:59.999


@dataclass
class RowError:
    """One skipped row: its file, its 1-based line (NDJSON, CSV) or row (Parquet), and what is wrong."""

    file: str
    line: int
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.file} {self.unit} {self.line}: {self.message}"
