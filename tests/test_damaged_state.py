"""A damaged state.sqlite3 (truncated, garbage, zeroed pages in the middle) stops `funnels serve` and
`funnels worker` before they serve: exit status 1, one line on stderr naming the file and what to do, no
traceback. The zeroed pages are caught by the integrity check at startup, not by a request."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import insert

from funnels.store.state import StateStore, event_log
from tests.automation.conftest import default_config
from tests.processes import BIN, free_port

pytestmark = pytest.mark.process  # a real server or CLI subprocess

PAGE = 4096


def make_state(data_dir: Path) -> Path:
    """A real state file of a few hundred pages (event log rows), checkpointed and closed."""
    data_dir.mkdir()
    path = data_dir / "state.sqlite3"
    store = StateStore(path)
    with store.write() as connection:
        connection.execute(
            insert(event_log),
            [{"event_id": f"e{n}", "record": b"r" * 300, "received_ms": n} for n in range(3_000)],
        )
    store.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    assert path.stat().st_size > 200 * PAGE
    return path


def truncate(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)


def garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def zero_pages(path: Path) -> None:
    """Zero ten pages in the middle: the header and the schema (page 1) are intact, so the file opens."""
    middle = path.stat().st_size // PAGE // 2
    with path.open("r+b") as file:
        file.seek(middle * PAGE)
        file.write(b"\0" * 10 * PAGE)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("damage", [truncate, garbage, zero_pages], ids=lambda damage: damage.__name__)
def test_serve_refuses_a_damaged_state_file_in_one_line(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    data_dir = tmp_path / "data"
    path = make_state(data_dir)
    damage(path)
    done = run("serve", "--data-dir", str(data_dir), "--port", str(free_port()))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0]
    assert "damaged" in lines[0] and "backup" in lines[0] and "move it aside" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_the_worker_and_keys_refuse_it_too(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = make_state(data_dir)
    zero_pages(path)
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps(default_config()))
    for args in (("worker", "--config", str(config)), ("keys", "list")):
        done = run(*args, "--data-dir", str(data_dir))
        assert done.returncode == 1, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert str(path) in done.stderr and "Traceback" not in done.stderr
