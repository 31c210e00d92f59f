"""`sms`: a text message through Twilio's REST API (account settings in the config or the environment)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SmsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str
    body: str
    from_: str | None = Field(default=None, alias="from")
