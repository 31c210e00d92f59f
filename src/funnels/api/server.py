"""How `funnels serve` runs the app under uvicorn, so that even a request uvicorn cannot parse as HTTP (an
over-long request line, malformed headers) gets the JSON error envelope instead of uvicorn's plain text."""

from __future__ import annotations

import contextlib

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

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
        head_done = False  # the current request's headers are complete
        head_bytes = 0  # bytes received since the current request began, until its headers are complete

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self.head_done and not self.transport.is_closing():
                # the whole chunk went to the head (a chunk that completed it set head_done)
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:
                    self.send_400_response("request head too large")

        def on_headers_complete(self) -> None:
            self.head_done = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self.head_done, self.head_bytes = False, 0

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


def run(app: FastAPI, host: str, port: int, public_url: str | None) -> bool:
    """Serve `app` until interrupted, as `uvicorn.run` would (Ctrl-C and SIGTERM stop it gracefully);
    False when it could not start (the port is taken, say)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", http=envelope_protocol(public_url)
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return server.started
