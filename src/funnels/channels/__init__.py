"""Action types: one module per type (args schema, settings schema, `deliver`), registered in `ACTION_TYPES`.

Built-in types use the same registration a plugin would: a `Channel` (see `base.py`). Each args schema
validates the shape of an action's `args` in the config file; every string in `args` is a Liquid template,
rendered just before delivery (`funnels.automation.templates`). Each settings schema is the channel's
section of the config file (`webhook:`, `slack:`, …), gaps filled from environment variables.
"""

from __future__ import annotations

from funnels.channels import email, slack, sms, webhook
from funnels.channels.base import Channel

ACTION_TYPES: dict[str, Channel] = {
    channel.name: channel for channel in (webhook.CHANNEL, slack.CHANNEL, email.CHANNEL, sms.CHANNEL)
}
