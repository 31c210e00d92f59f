"""Action types: one module per type with its args schema, registered in `ACTION_TYPES`.

Built-in types use the same registration a plugin would. Each args schema validates the shape of an
action's `args` in the config file; every string in `args` is a Liquid template, rendered at delivery.
(Delivery itself arrives with the automation worker; see issue 3 in the tracker.)
"""

from __future__ import annotations

from pydantic import BaseModel

from funnels.channels import email, slack, sms, webhook

ACTION_TYPES: dict[str, type[BaseModel]] = {
    "webhook": webhook.WebhookArgs,
    "slack": slack.SlackArgs,
    "email": email.EmailArgs,
    "sms": sms.SmsArgs,
}
