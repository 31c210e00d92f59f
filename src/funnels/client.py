"""The CLI's client of the server that holds a data directory (found through `funnels.discovery`): the
analytics endpoints and `POST /v0/import`, with the local credential from `server.json`.

Outcomes, each its own exception so the CLI can act on it: a server that is not there (`ServerAbsent`: the
file was left by a server that is gone, so the CLI opens the directory itself), one that went away
mid-request (`ServerLost`), and an error answer (`ServerRefused`, carrying the envelope's code, message and
details).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from funnels import discovery

CONNECT_SECONDS = 2.0  # a server on this machine accepts at once; longer means it is not there
UPLOAD_CHUNK = 1024 * 1024


class ServerAbsent(Exception):
    """Nothing answers for `server.json`, or what answers is not the server that wrote it."""


class ServerLost(Exception):
    """The server closed the connection before answering: it stopped or crashed mid-request."""


class ServerRefused(Exception):
    """The server answered with an error envelope."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


class ServerClient:
    """HTTP calls to the server `server.json` names, authorized by its local credential."""

    def __init__(self, server: discovery.ServerFile, transport: httpx.BaseTransport | None = None) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.credential}"},
            # No read limit: a funnel over a large table, or an import, takes as long as it takes. A server
            # that dies closes the connection, which ends the wait.
            timeout=httpx.Timeout(None, connect=CONNECT_SECONDS),
            transport=transport,
        )

    def __str__(self) -> str:
        return f"the server at {self.server.url} (pid {self.server.pid})"

    def get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """A GET endpoint's JSON body."""
        return self._send(self.http.build_request("GET", path, params=params))

    def upload(
        self, file: Path, name: str, sent: Callable[[int], None] = lambda _bytes: None
    ) -> dict[str, Any]:
        """`POST /v0/import` with the file's bytes, streamed (`sent` is told each piece's size)."""

        def pieces() -> Iterator[bytes]:
            with file.open("rb") as source:
                while piece := source.read(UPLOAD_CHUNK):
                    yield piece
                    sent(len(piece))

        headers = {"Content-Type": "application/octet-stream"}
        return self._send(
            self.http.build_request(
                "POST", "/v0/import", params={"name": name}, headers=headers, content=pieces()
            )
        )

    def close(self) -> None:
        self.http.close()

    def _send(self, request: httpx.Request) -> dict[str, Any]:
        try:
            response = self.http.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise ServerAbsent(f"{self} does not answer ({error})") from error
        except httpx.TransportError as error:
            raise ServerLost(
                f"{self} closed the connection before answering ({error or type(error).__name__}): it stopped "
                "or crashed mid-request"
            ) from error
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict):
            return body
        envelope = body.get("error") if isinstance(body, dict) else None
        if not isinstance(envelope, dict):
            raise ServerRefused(
                response.status_code,
                "UNEXPECTED",
                f"{self} answered HTTP {response.status_code} without an error envelope",
            )
        code, message = str(envelope.get("code")), str(envelope.get("message"))
        if code == "UNAUTHORIZED":  # a server on a reused port and pid, not the one that wrote the file
            raise ServerAbsent(f"{self} does not know the credential in server.json: {message}")
        details = envelope.get("details")
        raise ServerRefused(
            response.status_code, code, message, details if isinstance(details, dict) else None
        )


def find_server(data_dir: Path) -> ServerClient | None:
    """A client of the server that holds the data directory, or None when no live process announced one."""
    found = discovery.read(data_dir)
    if found is None or found.pid == os.getpid() or not discovery.alive(found.pid):
        return None
    return ServerClient(found)
