"""Rendering an action's args: every string in them is a Liquid template over the job's context.

Strict on purpose: an undefined variable is an error unless it goes through the `default` filter, because
a message that says "Hi ," to a customer is worse than a visible failure in the delivery log. Each
distinct template text is parsed once (an LRU cache keyed by the text); keys of args are never templates.

The context the worker passes: `modelProperties` (dict), `displayName`, `model`, `funnel`, `event`,
`eventProperties` (dict), `ids` (list of str), `step` (the step's event name), `stepNumber` (1-based).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, Environment, StrictDefaultUndefined
from liquid.exceptions import LiquidError, LiquidSyntaxError

_ENVIRONMENT = Environment(undefined=StrictDefaultUndefined)


class TemplateRenderError(Exception):
    """A template in args failed to parse or render; `path` says which (`args.body.user.email`)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


@lru_cache(maxsize=4096)
def parse_template(text: str) -> BoundTemplate:
    """The parsed template for a text, parsed once per distinct text (raises Liquid's syntax errors)."""
    return _ENVIRONMENT.from_string(text)


def render_args(args: Any, context: Mapping[str, Any], path: str = "args") -> Any:
    """A copy of args with every string rendered; dicts and lists are walked, other values kept."""
    if isinstance(args, str):
        return _render(args, context, path)
    if isinstance(args, Mapping):
        return {key: render_args(value, context, f"{path}.{key}") for key, value in args.items()}
    if isinstance(args, list | tuple):
        return [render_args(item, context, f"{path}[{index}]") for index, item in enumerate(args)]
    return args


def _render(text: str, context: Mapping[str, Any], path: str) -> str:
    if "{" not in text:  # no tag or output: nothing to parse (most URLs, subjects, plain bodies)
        return text
    try:
        template = parse_template(text)
    except LiquidSyntaxError as error:
        raise TemplateRenderError(path, f"Liquid syntax error: {error.message}") from None
    except LiquidError as error:
        raise TemplateRenderError(path, str(error.message)) from None
    try:
        return template.render(context)
    except LiquidError as error:
        raise TemplateRenderError(path, str(error.message)) from None
