"""Where the server keeps its data: `--data-dir`, else `FUNNELS_DATA_DIR`, else `./.funnels`; how long an
analytics query may run: `--query-timeout`, else `FUNNELS_QUERY_TIMEOUT_SECONDS`, else 300 s."""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_DATA_DIR = ".funnels"
# Each query of an analytics request stops after this many seconds (ClickHouse's `max_execution_time`) with
# a 503 naming the limit; 0 means no limit. 300 s is the server backend's HTTP read timeout as well.
DEFAULT_QUERY_TIMEOUT_SECONDS = 300.0


QUERY_TIMEOUT_ENV = "FUNNELS_QUERY_TIMEOUT_SECONDS"


def query_limit(seconds: float | None = None) -> float | None:
    """The time limit of an analytics query: `seconds` (`--query-timeout`), else `FUNNELS_QUERY_TIMEOUT_SECONDS`,
    else the default; None (no limit) for 0. `ValueError` for a negative or unreadable value."""
    if seconds is None:
        raw = os.environ.get(QUERY_TIMEOUT_ENV, "").strip()
        try:
            seconds = float(raw) if raw else DEFAULT_QUERY_TIMEOUT_SECONDS
        except ValueError:
            raise ValueError(f"{QUERY_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not seconds >= 0:  # negative, or NaN
        raise ValueError(f"the query timeout must be 0 (no limit) or a number of seconds, not {seconds:g}")
    return seconds or None


# The data directory holds API key hashes, action args with tokens and customers' personal data: only its
# owner may read it. Processes that own one create files with this umask (`funnels.cli`), and opening one
# tightens what an older release (or another umask) left readable.
PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_files() -> None:
    """From now on, this process creates files only its user can read: directories 0700, files 0600."""
    os.umask(PRIVATE_UMASK)


def tighten_data_dir(path: Path) -> None:
    """Create the data directory if missing; make it and everything in it 0700 (directories) or 0600 (files).
    Symbolic links are left alone: what they point to is not the data directory's."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _restrict(path, DIR_MODE)
    for root, dirs, files in os.walk(path):
        for names, mode in ((dirs, DIR_MODE), (files, FILE_MODE)):
            for name in names:
                _restrict(Path(root) / name, mode)


def _restrict(entry: Path, mode: int) -> None:
    try:
        found = os.stat(entry, follow_symlinks=False).st_mode
        if not stat.S_ISLNK(found) and stat.S_IMODE(found) != mode:
            os.chmod(entry, mode)
    except FileNotFoundError:  # removed meanwhile (a merged-away part)
        pass


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory, created if missing, readable by its owner only (`tighten_data_dir`)."""
    raw = explicit or os.environ.get("FUNNELS_DATA_DIR") or DEFAULT_DATA_DIR
    path = Path(raw).expanduser().resolve()
    tighten_data_dir(path)
    return path
