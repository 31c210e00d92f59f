"""`email`: a message over SMTP (server settings in the config's `email` section or the environment)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EmailArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str | list[str]
    subject: str
    from_: str | None = Field(default=None, alias="from")
    text: str | None = None
    html: str | None = None

    @model_validator(mode="after")
    def _has_a_body(self) -> EmailArgs:
        if self.text is None and self.html is None:
            raise ValueError("needs `text` or `html`")
        return self
