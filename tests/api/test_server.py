"""`funnels serve` over a raw socket: a request uvicorn cannot parse as HTTP, or whose request line and
headers are too large, gets the JSON envelope (with the configured public URL in `doc_url`), and the Host
header never reaches a response."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from funnels.api.server import MAX_HEAD_BYTES, envelope_protocol
from tests.processes import create_key, free_port, start_server

pytestmark = pytest.mark.process  # a real server or CLI subprocess

PUBLIC_URL = "https://funnels.example.com"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A real `funnels serve` with a public URL: its port and an events:write key."""
    data_dir: Path = tmp_path_factory.mktemp("server") / "data"
    key = create_key(data_dir, "events:write")
    port = free_port()
    server = start_server(data_dir, port, "--public-url", PUBLIC_URL + "/")
    try:
        yield port, key
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def port(served: tuple[int, str]) -> int:
    return served[0]


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


@pytest.mark.parametrize("requests", [1, 2], ids=["one request", "two on one connection"])
def test_a_body_larger_than_the_head_limit_is_not_counted_as_head(
    served: tuple[int, str], requests: int
) -> None:
    """Only the request line and headers count towards the limit: a small head with a 200 KB body, sent
    in one write (so the server may read head and body in one chunk), is stored, as is a second such
    request on the same connection."""
    port, key = served
    event = b'{"event": "x", "user_id": "u", "properties": {"p": "' + b"p" * 200 + b'"}}'
    body = b"[" + b",".join([event] * 1_000) + b"]"
    assert len(body) > 3 * MAX_HEAD_BYTES
    head = (
        b"POST /v0/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Authorization: Bearer "
        + key.encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
    )
    request = head + b"\r\n" + body
    last = head + b"Connection: close\r\n\r\n" + body
    status, _headers, answer = exchange(port, request * (requests - 1) + last)
    assert status == 200, answer
    assert json.loads(answer.split(b"\r\n\r\n")[-1])["accepted"] == 1_000


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


def test_a_head_and_body_read_in_one_chunk_count_only_the_head() -> None:
    """The same, deterministically: the whole request is in the socket before the protocol reads it, so
    its first read holds head and body together (over the limit in all)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    body = b"b" * (2 * MAX_HEAD_BYTES)
    request = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def exchange_in_one_read() -> bytes:
        ours, theirs = socket.socketpair()
        for side in (ours, theirs):
            side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * len(body))
            side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * len(body))
        ours.sendall(request + body)  # all buffered before the server side is read at all
        loop = asyncio.get_running_loop()
        config = uvicorn.Config(app, log_level="warning")
        protocol_class = envelope_protocol(None)
        await loop.connect_accepted_socket(
            lambda: protocol_class(config, ServerState(), {}, _loop=loop), theirs
        )
        ours.setblocking(False)
        answer = b""
        while chunk := await loop.sock_recv(ours, 65536):
            answer += chunk
        ours.close()
        return answer

    answer = asyncio.run(asyncio.wait_for(exchange_in_one_read(), 30))
    assert answer.startswith(b"HTTP/1.1 204"), answer
