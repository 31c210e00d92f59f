"""Rendering an action's args: every string in them is a Liquid template over the job's context.

Strict on purpose: an undefined variable is an error unless it goes through the `default` filter, because
a message that says "Hi ," to a customer is worse than a visible failure in the delivery log. Each
distinct template text is parsed once (an LRU cache keyed by the text); keys of args are never templates.

The context the worker passes: `modelProperties` (dict), `displayName`, `model`, `funnel`, `event`,
`eventProperties` (dict), `ids` (list of str), `step` (the step's event name), `stepNumber` (1-based),
`unsubscribe_url` (a non-transactional email's or SMS's one-click unsubscribe link; "" for other actions
and when the server's public URL is not set: `funnels.automation.consent`).

Escaping: a channel's args schema marks fields whose interpolated values need escaping (`Escape` in
`funnels.channels.base`: URLs are percent-encoded, Slack text gets `&`, `<`, `>` as entities). Such a field
is rendered in an environment whose output statements (`{{ }}` and `echo`) escape what they write, like
Jinja's autoescape, so the template's own literal text is never touched. The `safe` filter, last in an
output, writes its value as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TextIO

from liquid import BoundTemplate, Environment, StrictDefaultUndefined
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.exceptions import LiquidError, LiquidSyntaxError
from liquid.stringify import to_liquid_string
from pydantic import BaseModel

from funnels.channels.base import Escape, escapers

if TYPE_CHECKING:
    from liquid.context import RenderContext


class Verbatim(str):
    """A value marked by the `safe` filter: written out without escaping."""

    __slots__ = ()


def safe(value: object) -> Verbatim:
    """The `safe` filter: opt a value out of its field's escaping (use it last in an output)."""
    return Verbatim(to_liquid_string(value, autoescape=False))


class EscapingEnvironment(Environment):
    """Strict Liquid whose `{{ }}` and `echo` outputs pass through `escape` (unless marked `safe`)."""

    def __init__(self, escape: Escape) -> None:
        self.escape = escape
        super().__init__(undefined=StrictDefaultUndefined)
        self.add_tag(_EscapedOutput)
        self.add_tag(_EscapedEcho)
        self.add_filter("safe", safe)


def _escaped(context: RenderContext, value: object) -> str:
    text = to_liquid_string(value, autoescape=False)
    env = context.env
    if isinstance(value, Verbatim) or not isinstance(env, EscapingEnvironment):
        return text
    return env.escape.escape(text)


class _EscapedOutputNode(OutputNode):
    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return buffer.write(_escaped(context, self.expression.evaluate(context)))

    async def render_to_output_async(self, context: RenderContext, buffer: TextIO) -> int:
        return buffer.write(_escaped(context, await self.expression.evaluate_async(context)))


class _EscapedEchoNode(EchoNode):
    render_to_output = _EscapedOutputNode.render_to_output
    render_to_output_async = _EscapedOutputNode.render_to_output_async


class _EscapedOutput(Output):
    node_class = _EscapedOutputNode


class _EscapedEcho(EchoTag):
    node_class = _EscapedEchoNode


_ENVIRONMENT = Environment(undefined=StrictDefaultUndefined)
_ESCAPING: dict[Escape, EscapingEnvironment] = {}


class TemplateRenderError(Exception):
    """A template in args failed to parse or render; `path` says which (`args.body.user.email`)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


@lru_cache(maxsize=4096)
def parse_template(text: str, escape: Escape | None = None) -> BoundTemplate:
    """The parsed template for a text (and escaper), parsed once (raises Liquid's syntax errors)."""
    if escape is None:
        return _ENVIRONMENT.from_string(text)
    environment = _ESCAPING.get(escape)
    if environment is None:
        environment = _ESCAPING.setdefault(escape, EscapingEnvironment(escape))
    return environment.from_string(text)


def render_action_args(
    args: Mapping[str, Any], context: Mapping[str, Any], schema: type[BaseModel]
) -> dict[str, Any]:
    """An action's args rendered, each field with the escaper its channel's args `schema` gives it."""
    chosen = escapers(schema)
    return {key: render_args(value, context, f"args.{key}", chosen.get(key)) for key, value in args.items()}


def render_args(
    args: Any, context: Mapping[str, Any], path: str = "args", escape: Escape | None = None
) -> Any:
    """A copy of args with every string rendered; dicts and lists are walked, other values kept."""
    if isinstance(args, str):
        return _render(args, context, path, escape)
    if isinstance(args, Mapping):
        return {key: render_args(value, context, f"{path}.{key}", escape) for key, value in args.items()}
    if isinstance(args, list | tuple):
        return [render_args(item, context, f"{path}[{index}]", escape) for index, item in enumerate(args)]
    return args


def _render(text: str, context: Mapping[str, Any], path: str, escape: Escape | None) -> str:
    if "{" not in text:  # no tag or output: nothing to parse (most URLs, subjects, plain bodies)
        return text
    try:
        template = parse_template(text, escape)
    except LiquidSyntaxError as error:
        raise TemplateRenderError(path, f"Liquid syntax error: {error.message}") from None
    except LiquidError as error:
        raise TemplateRenderError(path, str(error.message)) from None
    try:
        return template.render(context)
    except LiquidError as error:
        raise TemplateRenderError(path, str(error.message)) from None
