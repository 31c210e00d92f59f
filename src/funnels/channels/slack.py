"""`slack`: a message by incoming-webhook `url`, or by bot `token` to `channel`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


class SlackArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str
    url: str | None = None
    token: str | None = None
    channel: str | None = None

    @model_validator(mode="after")
    def _one_way_to_send(self) -> SlackArgs:
        if self.url is None and (self.token is None or self.channel is None):
            raise ValueError("needs `url` (an incoming webhook) or both `token` and `channel` (a bot)")
        return self
