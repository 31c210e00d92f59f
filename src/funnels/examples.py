"""The spec's onboarding funnel as a builder, for the demo and the tests that play it end to end.

Its shape is fixed: `sign_up` → `development_api_call` → `production_api_call`, a Slack message at sign-up,
an email reminder 3 days later unless the customer reached `development_api_call`, and the caller's
action(s) at `production_api_call`. Where messages go and what they say are the caller's.
(`tests/test_config.py` keeps its own literal copy of docs/config.md's example, which this does not serve.)
"""

from __future__ import annotations

from typing import Any

Action = dict[str, Any]


def onboarding_funnel(
    *, slack: dict[str, Any], reminder: dict[str, Any], converted: Action | list[Action]
) -> Action:
    """The `onboarding` funnel for the `customer` model; `slack` and `reminder` are the args of the Slack
    message and of the 3-day email, `converted` the action (or list) at `production_api_call`."""
    return {
        "id": "onboarding",
        "forModels": "customer",
        "steps": [
            {
                "event": "sign_up",
                "actions": [
                    {"type": "slack", "args": slack},
                    {"type": "email", "delay": "3d", "unless": "development_api_call", "args": reminder},
                ],
            },
            {"event": "development_api_call"},
            {"event": "production_api_call", "actions": converted},
        ],
    }
