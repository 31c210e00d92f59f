"""How `funnels serve` runs the app under uvicorn: even a request uvicorn cannot parse as HTTP (an over-long
request line, malformed headers) gets the JSON error envelope instead of uvicorn's plain text, and while it
listens the data directory's `server.json` says where (`funnels.discovery`)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from funnels import discovery
from funnels.api.errors import ApiError, envelope

# The request line and headers together (h11, uvicorn's other parser, allows 16 KB; httptools no limit).
MAX_HEAD_BYTES = 64 * 1024
UNREADABLE = ApiError(
    "BAD_REQUEST",
    f"The request is not valid HTTP/1.1, or its request line and headers are larger than "
    f"{MAX_HEAD_BYTES // 1024} KB; nothing was run.",
)


def envelope_protocol(public_url: str | None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, answering a request it cannot parse, or whose head is over
    `MAX_HEAD_BYTES`, with the envelope."""
    body = orjson.dumps(envelope(UNREADABLE, public_url))

    class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
        in_head = True  # between the start of a request and the end of its headers
        head_bytes = 0  # the current request's URL and headers so far, as the parser handed them over
        unparsed_bytes = 0  # bytes received while its head was still incomplete

        def on_message_begin(self) -> None:
            self.in_head, self.head_bytes, self.unparsed_bytes = True, 0, 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF
            super().on_header(name, value)

        def _count(self, size: int) -> None:
            self.head_bytes += size
            if self.head_bytes > MAX_HEAD_BYTES:  # the parser turns this into a 400 (`send_400_response`)
                raise ValueError("request head too large")

        def on_headers_complete(self) -> None:
            self.in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # A head still incomplete after this chunk: the parser buffers a header it has not finished
            # (a name without its colon, say) without handing it over, so count what came in as well.
            if self.in_head and not self.transport.is_closing():
                self.unparsed_bytes += len(data)
                if self.unparsed_bytes > MAX_HEAD_BYTES:
                    self.send_400_response("request head too large")

        def send_400_response(self, msg: str) -> None:  # msg: uvicorn's plain text, replaced
            content = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n",
                    b"\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(content))
            self.transport.close()

    return EnvelopeHttpToolsProtocol


class AnnouncedServer(uvicorn.Server):
    """uvicorn's server, announced in `data_dir/server.json` from when it listens until it shuts down (with
    the app's local credential, `app.state.local_credential`)."""

    def __init__(self, config: uvicorn.Config, data_dir: Path | None, credential: str | None) -> None:
        super().__init__(config)
        self.data_dir, self.credential = data_dir, credential

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.data_dir is not None and self.credential is not None:
            bound = self.servers[0].sockets[0].getsockname()  # the port, even when asked for port 0
            discovery.write(self.data_dir, discovery.local_url(self.config.host, bound[1]), self.credential)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.withdraw()  # first: a CLI started from now on opens the directory itself once we have gone
        await super().shutdown(sockets)

    def withdraw(self) -> None:
        if self.data_dir is not None:
            discovery.remove(self.data_dir)


def run(app: FastAPI, host: str, port: int, public_url: str | None, data_dir: Path | None = None) -> bool:
    """Serve `app` until interrupted, as `uvicorn.run` would (Ctrl-C and SIGTERM stop it gracefully), and
    announce it in `data_dir` meanwhile; False when it could not start (the port is taken, say)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", http=envelope_protocol(public_url)
    )
    server = AnnouncedServer(config, data_dir, getattr(app.state, "local_credential", None))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    finally:
        server.withdraw()  # also when serving ended by an exception, before shutdown ran
    return server.started
