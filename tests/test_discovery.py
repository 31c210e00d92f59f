"""`server.json`: written whole and private, read without ever raising, removed only by its writer, and the
URL this machine reaches a server at."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from funnels import discovery


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("", "http://127.0.0.1:8000"),
        ("::", "http://[::1]:8000"),
        ("::1", "http://[::1]:8000"),
        ("10.1.2.3", "http://10.1.2.3:8000"),
        ("localhost", "http://localhost:8000"),
    ],
)
def test_the_url_this_machine_reaches_a_server_at(host: str, url: str) -> None:
    assert discovery.local_url(host, 8000) == url


def test_written_whole_private_and_read_back(tmp_path: Path) -> None:
    (tmp_path / f".server.json.{os.getpid()}").write_text("left by a crash")
    os.chmod(tmp_path / f".server.json.{os.getpid()}", 0o644)
    credential = discovery.new_credential()
    written = discovery.write(tmp_path, "http://127.0.0.1:8000", credential)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["server.json"]  # renamed into place
    assert stat.S_IMODE((tmp_path / "server.json").stat().st_mode) == 0o600
    assert discovery.read(tmp_path) == written
    assert written.pid == os.getpid() and written.started.endswith("Z")
    assert discovery.is_local_credential(credential) and len(credential) > 40
    assert discovery.matches(credential, credential) and not discovery.matches(credential + "x", credential)
    assert not discovery.matches(credential, None)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[]",
        json.dumps({"url": "http://x", "pid": "a lot", "started": "", "credential": "fl_x"}),
        json.dumps({"url": "http://x", "pid": 0, "started": "", "credential": "fl_x"}),
        json.dumps({"url": "http://x", "pid": 12, "started": "", "credential": None}),
        json.dumps({"url": "http://x", "pid": 12}),
    ],
)
def test_anything_else_reads_as_no_server(tmp_path: Path, content: str) -> None:
    (tmp_path / "server.json").write_text(content)
    assert discovery.read(tmp_path) is None
    assert discovery.read(tmp_path / "missing") is None


def test_removed_only_by_the_process_that_wrote_it(tmp_path: Path) -> None:
    other = {"url": "http://127.0.0.1:1", "pid": os.getpid() + 1, "started": "x", "credential": "fl_x"}
    (tmp_path / "server.json").write_text(json.dumps(other))
    discovery.remove(tmp_path)
    assert (tmp_path / "server.json").exists()
    discovery.write(tmp_path, "http://127.0.0.1:8000", discovery.new_credential())
    discovery.remove(tmp_path)
    assert not (tmp_path / "server.json").exists()
    discovery.remove(tmp_path)  # nothing to remove: no error


def test_alive() -> None:
    assert discovery.alive(os.getpid())
    assert not discovery.alive(2**22 + 12345)  # above Linux's pid_max
