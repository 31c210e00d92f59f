"""Liquid rendering of action args: every context key, nested paths, strict undefined, the parse cache."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from funnels.automation.templates import TemplateRenderError, parse_template, render_action_args, render_args
from funnels.channels.slack import SlackArgs
from funnels.channels.webhook import WebhookArgs

CONTEXT: dict[str, Any] = {
    "modelProperties": {"email": "ada@example.test", "plan": {"name": "pro"}},
    "displayName": "Ada",
    "model": "customer",
    "funnel": "onboarding",
    "event": "sign_up",
    "eventProperties": {"source": "twitter", "seats": 3},
    "ids": ["u1", "ada@example.test"],
    "step": "sign_up",
    "stepNumber": 1,
}


def test_every_context_key_renders() -> None:
    args = {
        "modelProperties": "{{ modelProperties.email }} on {{ modelProperties.plan.name }}",
        "displayName": "{{ displayName }}",
        "model": "{{ model }}",
        "funnel": "{{ funnel }}",
        "event": "{{ event }}",
        "eventProperties": "{{ eventProperties.source }} x{{ eventProperties.seats | plus: 1 }}",
        "ids": "{{ ids[0] }} / {{ ids | join: ',' }} / {{ ids.size }}",
        "step": "{{ step }}",
        "stepNumber": "step {{ stepNumber }}",
    }
    assert render_args(args, CONTEXT) == {
        "modelProperties": "ada@example.test on pro",
        "displayName": "Ada",
        "model": "customer",
        "funnel": "onboarding",
        "event": "sign_up",
        "eventProperties": "twitter x4",
        "ids": "u1 / u1,ada@example.test / 2",
        "step": "sign_up",
        "stepNumber": "step 1",
    }


def test_nested_args_render_inside_dicts_and_lists_and_keep_keys_and_other_values() -> None:
    args = {
        "url": "https://example.test/hooks",
        "to": ["{{ ids[1] }}", "ops@acme.test"],
        "body": {
            "{{ model }}": "{{ displayName }}",
            "user": {"ids": ["{{ ids[0] }}"], "n": 3, "on": True, "x": None},
        },
    }
    before = copy.deepcopy(args)
    assert render_args(args, CONTEXT) == {
        "url": "https://example.test/hooks",
        "to": ["ada@example.test", "ops@acme.test"],
        "body": {"{{ model }}": "Ada", "user": {"ids": ["u1"], "n": 3, "on": True, "x": None}},
    }
    assert args == before  # a copy, the stored action is untouched


def test_an_undefined_variable_is_an_error_naming_the_args_path() -> None:
    args = {"body": {"user": {"email": "{{ modelProperties.mail }}"}}}
    with pytest.raises(TemplateRenderError) as caught:
        render_args(args, CONTEXT)
    assert caught.value.path == "args.body.user.email"
    assert "undefined" in caught.value.message and "mail" in caught.value.message
    assert str(caught.value).startswith("args.body.user.email: ")
    with pytest.raises(TemplateRenderError) as in_list:
        render_args({"to": ["ok@example.test", "Hi {{ nickname }}"]}, CONTEXT)
    assert in_list.value.path == "args.to[1]"
    with pytest.raises(TemplateRenderError, match="undefined"):
        render_args("{% if modelProperties.vip %}VIP{% endif %}", CONTEXT)  # strict in tags too


def test_the_default_filter_makes_a_missing_value_fine() -> None:
    args = {
        "text": "Hi {{ modelProperties.first_name | default: 'there' }}, {{ nickname | default: displayName }}"
    }
    assert render_args(args, CONTEXT) == {"text": "Hi there, Ada"}


def test_a_syntax_error_and_an_unknown_filter_name_the_path() -> None:
    with pytest.raises(TemplateRenderError) as syntax:
        render_args({"to": ["a@example.test", "{{ oops"]}, CONTEXT)
    assert syntax.value.path == "args.to[1]" and syntax.value.message.startswith("Liquid syntax error: ")
    with pytest.raises(TemplateRenderError) as unknown:
        render_args({"subject": "{{ displayName | shout }}"}, CONTEXT)
    assert unknown.value.path == "args.subject" and "shout" in unknown.value.message


def test_each_distinct_template_text_is_parsed_once() -> None:
    text = "Cache check {{ displayName }} #7f3a"  # a text no other test uses
    before = parse_template.cache_info()
    for _ in range(3):
        assert render_args({"a": text, "b": [text]}, CONTEXT) == {
            "a": "Cache check Ada #7f3a",
            "b": ["Cache check Ada #7f3a"],
        }
    after = parse_template.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 5
    assert parse_template(text) is parse_template(text)


def test_plain_strings_are_returned_without_parsing() -> None:
    before = parse_template.cache_info()
    assert render_args({"url": "https://example.test/x?y=1"}, CONTEXT) == {
        "url": "https://example.test/x?y=1"
    }
    assert parse_template.cache_info() == before


HOSTILE = {
    "uid": "../../admin?x=",
    "name": "<!channel> <https://evil.example|verify here> & co",
    "dots": "..",
}


def test_values_in_a_url_are_percent_encoded_and_the_template_text_is_not() -> None:
    args = {
        "url": "https://crm.test/users/{{ modelProperties.uid }}/{{ modelProperties.dots }}?n={% echo name %}",
        "headers": {"X-Uid": "{{ modelProperties.uid }}"},  # not a URL: as is
        "body": {"uid": "{{ modelProperties.uid }}"},
    }
    rendered = render_action_args(args, {**CONTEXT, "modelProperties": HOSTILE, "name": "a b/c"}, WebhookArgs)
    assert rendered == {
        "url": "https://crm.test/users/..%2F..%2Fadmin%3Fx%3D/%2E%2E?n=a%20b%2Fc",
        "headers": {"X-Uid": "../../admin?x="},
        "body": {"uid": "../../admin?x="},
    }


def test_values_in_slack_text_are_escaped_and_the_template_markup_is_not() -> None:
    args = {"content": "<!here> {{ displayName }} joined <https://app.test|open>", "url": "https://h.test/x"}
    rendered = render_action_args(args, {**CONTEXT, "displayName": HOSTILE["name"]}, SlackArgs)
    assert rendered["content"] == (
        "<!here> &lt;!channel&gt; &lt;https://evil.example|verify here&gt; &amp; co joined <https://app.test|open>"
    )


def test_the_safe_filter_opts_one_value_out() -> None:
    context = {**CONTEXT, "modelProperties": {"hook": "https://hooks.test/a?b=c", "uid": "a/b"}}
    rendered = render_action_args(
        {"url": "{{ modelProperties.hook | safe }}&uid={{ modelProperties.uid }}"}, context, WebhookArgs
    )
    assert rendered == {"url": "https://hooks.test/a?b=c&uid=a%2Fb"}
    # Without an escaper (email, sms, other fields) `safe` changes nothing.
    assert render_args("{{ modelProperties.uid | safe }}", context) == "a/b"
