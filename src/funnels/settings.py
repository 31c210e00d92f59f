"""Where the server keeps its data: `--data-dir`, else `FUNNELS_DATA_DIR`, else `./.funnels`."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = ".funnels"


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory, created if missing."""
    raw = explicit or os.environ.get("FUNNELS_DATA_DIR") or DEFAULT_DATA_DIR
    path = Path(raw).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
