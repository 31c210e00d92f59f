"""The data directory holds key hashes, action args with tokens and customers' personal data: after a real
server has run, ingested and shipped (so the WAL, chDB's parts and the delivery config exist), every
directory in it is 0700 and every file 0600, including what an older release left readable."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

import pytest

from tests.automation.conftest import default_config
from tests.processes import client, create_key, free_port, start_server, wait_until

pytestmark = pytest.mark.process  # a real server or CLI subprocess


def loose_modes(data_dir: Path) -> dict[str, str]:
    """Every path under `data_dir` (itself included) whose mode is not 0700 (directories) / 0600 (files)."""
    loose = {}
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        wanted = 0o700 if stat.S_ISDIR(mode) else 0o600
        if stat.S_IMODE(mode) != wanted:
            loose[str(path.relative_to(data_dir.parent))] = oct(stat.S_IMODE(mode))
    return loose


def test_every_file_in_the_data_directory_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # as an older release left it, whatever this process's umask
    old = data_dir / "delivery-config.json"
    old.write_text("{}")
    old.chmod(0o644)
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps(default_config()))
    key = create_key(data_dir, "events:write", "admin")
    port = free_port()
    server = start_server(data_dir, port, "--config", str(config))
    try:
        with client(port, key) as http:
            for number in range(3):
                answer = http.post(
                    "/api/v1/identify",
                    json={
                        "model": "customer",
                        "ids": [f"c{number}"],
                        "properties": {"email": "a@example.com"},
                    },
                )
                assert answer.status_code == 200, answer.text
                assert (
                    http.post("/v0/events", json={"event": "x", "user_id": f"c{number}"}).status_code == 200
                )
            wait_until(lambda: http.get("/healthz").json().get("shipper_backlog") == "0")
        assert (data_dir / "state.sqlite3-wal").exists()
        assert any((data_dir / "events").rglob("*.bin")), "chDB wrote no part"
        assert json.loads(old.read_text()) != {}  # the server rewrote it for its delivery process
        assert loose_modes(data_dir) == {}
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert loose_modes(data_dir) == {}  # and what was written on the way out
