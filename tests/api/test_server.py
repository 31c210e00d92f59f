"""`funnels serve` over a raw socket: a request uvicorn cannot parse as HTTP, or whose request line and
headers are too large, gets the JSON envelope (with the configured public URL in `doc_url`), and the Host
header never reaches a response."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from funnels.api.server import MAX_HEAD_BYTES
from tests.processes import free_port, start_server

PUBLIC_URL = "https://funnels.example.com"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    data_dir: Path = tmp_path_factory.mktemp("server") / "data"
    port = free_port()
    server = start_server(data_dir, port, "--public-url", PUBLIC_URL + "/")
    try:
        yield port
    finally:
        server.terminate()
        server.wait(30)


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the server closes the connection: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        # the server may answer and close before taking it all: its answer is still there
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split(" ")[1]), {name.lower(): value for name, value in headers.items()}, body


MALFORMED: dict[str, bytes] = {
    "over-long request line": b"GET /" + b"a" * (MAX_HEAD_BYTES + 1) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "over-large header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"b" * (MAX_HEAD_BYTES + 1)
    + b"\r\n\r\n",
    "many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 10_000 + b"\r\n",
    "not HTTP": b"HELLO THERE\r\n\r\n",
    "header without a colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_get_the_envelope(port: int, request_bytes: bytes) -> None:
    status, headers, body = exchange(port, request_bytes)
    assert status == 400
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "BAD_REQUEST"
    assert error["doc_url"] == f"{PUBLIC_URL}/errors#bad_request"


def test_a_head_just_under_the_limit_is_served(port: int) -> None:
    padding = b"p" * (MAX_HEAD_BYTES - 200)
    status, _headers, body = exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + padding + b"\r\nConnection: close\r\n\r\n"
    )
    assert status == 200, body


def test_a_hostile_host_header_is_not_reflected(port: int) -> None:
    for path in (b"/v0/events", b"/no-such-page", b"/v0/funnel", b"/v0/keys/"):
        status, headers, body = exchange(
            port, b"GET " + path + b" HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        )
        assert status >= 400 or status in (303, 307)
        assert b"evil.example" not in body
        assert not any("evil.example" in value for value in headers.values())
        if body:
            assert json.loads(body)["error"]["doc_url"].startswith(f"{PUBLIC_URL}/errors#")


def test_a_bad_public_url_stops_the_server_at_once(tmp_path: Path) -> None:
    from tests.processes import BIN

    result = subprocess.run(
        [str(BIN), "serve", "--data-dir", str(tmp_path / "data"), "--public-url", "evil.example/x?y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--public-url" in result.stderr
