"""`webhook`: an HTTP request to `url` (signed with HMAC-SHA256 over timestamp + body)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class WebhookArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = {}
    body: str | dict[str, Any] | list[Any] | None = None
