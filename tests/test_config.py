"""The config file: the spec's shapes are accepted, and every problem is reported with its path."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from funnels.config import ConfigInvalid, DeliveryPolicy, load_config, parse_duration, validate_config

ONBOARDING = {
    "models": [{"name": "customer"}, {"name": "organization"}],
    "funnels": [
        {
            "id": "onboarding",
            "forModels": "customer",
            "steps": [
                {
                    "event": "sign_up",
                    "actions": [
                        {
                            "type": "slack",
                            "args": {
                                "url": "http://127.0.0.1:9/hook",
                                "content": "{{ displayName }} signed up",
                            },
                        },
                        {
                            "type": "email",
                            "delay": "3d",
                            "unless": "development_api_call",
                            "notBefore": 9,
                            "notAfter": "17:30",
                            "args": {
                                "to": "{{ modelProperties.email }}",
                                "subject": "Need a hand?",
                                "text": "Hi {{ displayName }}",
                            },
                        },
                    ],
                },
                {"event": "development_api_call"},
                {
                    "event": "production_api_call",
                    "actions": {
                        "type": "webhook",
                        "args": {"url": "https://example.test/x", "body": {"id": "{{ ids[0] }}"}},
                    },
                },
            ],
        }
    ],
}


def errors_of(raw: object) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as caught:
        validate_config(raw)
    return {error.path: error.message for error in caught.value.errors}


def test_the_specs_onboarding_example_is_accepted_with_single_object_forms() -> None:
    config = validate_config(ONBOARDING)
    assert config.models == ("customer", "organization") and config.segment_model == "customer"
    (funnel,) = config.funnels
    assert funnel.for_models == ("customer",)
    assert [step.event for step in funnel.steps] == ["sign_up", "development_api_call", "production_api_call"]
    reminder = funnel.steps[0].actions[1]
    assert reminder.delay == timedelta(days=3) and reminder.unless == ("development_api_call",)
    assert (reminder.not_before_minute, reminder.not_after_minute) == (540, 1050)
    assert funnel.steps[2].actions[0].type == "webhook"
    assert (
        validate_config({**ONBOARDING, "funnels": {**ONBOARDING["funnels"][0], "steps": {"event": "x"}}})
        .funnels[0]
        .steps[0]
        .event
        == "x"
    )


def test_every_problem_is_reported_with_its_path() -> None:
    funnel = json.loads(json.dumps(ONBOARDING["funnels"][0]))
    funnel["forModels"] = ["customer", "robot"]
    actions = funnel["steps"][0]["actions"]
    actions[0]["args"] = {"content": "{{ oops"}
    actions[1]["delay"] = "soon"
    actions[1]["unless"] = ["development_api_call", "never_a_step"]
    actions[1]["notBefore"] = 25
    actions[1]["args"].pop("subject")
    funnel["steps"][2]["actions"] = [
        {"type": "fax", "args": {}},
        {"type": "webhook", "args": {"method": "POST"}},
    ]
    raw = {"models": [{"name": "customer"}], "funnels": [funnel, dict(funnel)], "extra": 1}
    errors = errors_of(raw)
    assert errors["funnels[0].forModels[1]"].startswith("unknown model 'robot'")
    assert (
        "url" in errors["funnels[0].steps[0].actions[0].args"]
        and "token" in errors["funnels[0].steps[0].actions[0].args"]
    )
    assert errors["funnels[0].steps[0].actions[0].args.content"].startswith("Liquid syntax error")
    assert "duration" in errors["funnels[0].steps[0].actions[1].delay"]
    assert "never_a_step" in errors["funnels[0].steps[0].actions[1].unless"]
    assert "hour" in errors["funnels[0].steps[0].actions[1].notBefore"]
    assert errors["funnels[0].steps[0].actions[1].args.subject"] == "Field required"
    assert errors["funnels[0].steps[2].actions[0].type"].startswith("unknown action type 'fax'")
    assert errors["funnels[0].steps[2].actions[1].args.url"] == "Field required"
    assert errors["funnels[1].id"].startswith("duplicate funnel id 'onboarding'")
    assert errors["extra"].startswith("unknown section")


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"funnels": []}, "models"),
        ({"models": [{"name": "a"}, {"name": "a"}]}, "models[1].name"),
        ({"models": [{"name": "a"}], "funnels": [{"id": "f", "forModels": "a"}]}, "funnels[0].steps"),
        (
            {"models": [{"name": "a"}], "funnels": [{"id": "f", "forModels": "a", "steps": {"event": ""}}]},
            "funnels[0].steps.event",
        ),
        ({"models": [{"name": "a"}], "segment": {"model": "b"}}, "segment.model"),
        ({"models": [{"name": "a"}], "email": "smtp://x"}, "email"),
        ([], "$"),
    ],
)
def test_shape_errors(raw: object, path: str) -> None:
    assert path in errors_of(raw)


def test_durations() -> None:
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("3d") == timedelta(days=3)
    assert parse_duration("P3D") == timedelta(days=3)
    assert parse_duration("PT1H30M") == timedelta(minutes=90)
    for bad in ("0s", "3 days", "P", 5, "-1d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_yaml_and_json_files_and_syntax_errors(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps(ONBOARDING))
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(ONBOARDING))
    assert load_config(tmp_path / "c.json") == load_config(tmp_path / "c.yaml")
    (tmp_path / "bad.yaml").write_text("models: [\n")
    with pytest.raises(ConfigInvalid, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.process
def test_validate_command(tmp_path: Path) -> None:
    funnels = str(Path(sys.executable).parent / "funnels")
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(ONBOARDING))
    bad.write_text(
        json.dumps(
            {
                "models": [{"name": "customer"}],
                "funnels": [
                    {
                        "id": "f",
                        "forModels": "x",
                        "steps": {"event": "e", "actions": {"type": "sms", "args": {}}},
                    }
                ],
            }
        )
    )
    ok = subprocess.run([funnels, "validate", str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "ok (2 models, 1 funnels, 3 steps)" in ok.stdout
    failed = subprocess.run([funnels, "validate", str(bad)], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    assert "funnels[0].forModels: unknown model 'x'" in failed.stderr
    assert "funnels[0].steps.actions.args.to: Field required" in failed.stderr
    assert "funnels[0].steps.actions.args.body: Field required" in failed.stderr
    assert "3 problem(s)" in failed.stderr


def with_sections(**sections: object) -> dict[str, object]:
    return {**ONBOARDING, **sections}


def test_channel_settings_are_validated_with_paths() -> None:
    errors = errors_of(
        with_sections(
            email={"port": "abc", "security": "tls", "hots": "smtp.example.test"},
            slack={"apiUrl": 5},
            sms=["AC123"],
            webhook={"secret": 1},
        )
    )
    assert errors["email.port"].startswith("Input should be a valid integer")
    assert errors["email.security"].startswith("Input should be 'starttls', 'ssl' or 'none'")
    assert errors["email.hots"] == (
        "unknown field (expected host, port, username, password, security, from, unsubscribeMailto)"
    )
    assert errors["slack.apiUrl"] == "Input should be a valid string"
    assert errors["sms"] == "expected an object of settings"
    assert errors["webhook.secret"] == "Input should be a valid string"
    assert "email.port" in errors_of(with_sections(email={"port": 70000}))


def test_channel_settings_are_resolved_with_the_environment_at_load_time() -> None:
    environ = {
        "FUNNELS_SMTP_HOST": "smtp.env.test",
        "FUNNELS_SMTP_PORT": "465",
        "FUNNELS_WEBHOOK_SECRET": "env",
    }
    config = validate_config(
        with_sections(email={"from": "hello@acme.test"}, webhook={"secret": "file"}), environ
    )
    assert set(config.channel_settings) == {"webhook", "slack", "email", "sms"}
    email = config.channel_settings["email"]
    assert (email.host, email.port, email.security, email.from_) == (  # type: ignore[attr-defined]
        "smtp.env.test",
        465,
        "ssl",
        "hello@acme.test",
    )
    assert config.channel_settings["webhook"].secret.get_secret_value() == "file"  # type: ignore[attr-defined]
    assert config.channel_settings["slack"].api_url == "https://slack.com/api"  # type: ignore[attr-defined]


def test_the_unsubscribe_mailbox_must_be_one_address() -> None:
    for bad in ("unsubscribe", "a@x.test, b@y.test", "Unsubscribe <u@x.test>\nBcc: e@evil.test"):
        errors = errors_of(with_sections(email={"unsubscribeMailto": bad}))
        assert "is not exactly one email address" in errors["email"] or "line break" in errors["email"], (
            errors
        )
    config = validate_config(ONBOARDING, {"FUNNELS_UNSUBSCRIBE_MAILTO": "Unsubscribe <u@acme.test>"})
    assert config.channel_settings["email"].unsubscribe_mailto == "Unsubscribe <u@acme.test>"  # type: ignore[attr-defined]


def test_a_bad_environment_value_is_reported_with_its_variable() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        validate_config(ONBOARDING, {"FUNNELS_SMTP_PORT": "smtp"})
    (error,) = caught.value.errors
    assert error.path == "email.port" and error.message.startswith("from FUNNELS_SMTP_PORT: Input should be")


def test_the_delivery_policy() -> None:
    assert validate_config(ONBOARDING, {}).delivery == DeliveryPolicy(
        max_attempts=8,
        timeout=timedelta(seconds=10),
        backoff_base=timedelta(seconds=2),
        backoff_max=timedelta(hours=1),
    )
    custom = validate_config(
        with_sections(
            delivery={"maxAttempts": 3, "timeout": "5s", "backoffBase": "30s", "backoffMax": "PT2H"}
        ),
        {},
    )
    assert custom.delivery == DeliveryPolicy(
        3, timedelta(seconds=5), timedelta(seconds=30), timedelta(hours=2)
    )
    errors = errors_of(
        with_sections(
            delivery={
                "maxAttempts": 0,
                "timeout": "soon",
                "backoffBase": "1h",
                "backoffMax": "1m",
                "retries": 2,
            }
        )
    )
    assert errors["delivery.maxAttempts"] == "expected a whole number of at least 1"
    assert "duration" in errors["delivery.timeout"]
    assert errors["delivery.backoffMax"] == "must be at least backoffBase (1h)"
    assert errors["delivery.retries"].startswith("unknown field (expected maxAttempts, timeout")
    for bad in (True, "3", 2.5):
        assert "delivery.maxAttempts" in errors_of(with_sections(delivery={"maxAttempts": bad}))
    assert errors_of(with_sections(delivery=[]))["delivery"].startswith("expected an object")


def test_the_network_allow_list() -> None:
    assert validate_config(ONBOARDING, {}).network_allow == ()
    allowed = validate_config(with_sections(network={"allow": ["127.0.0.1/32", "10.0.0.0/8", "::1"]}), {})
    assert allowed.network_allow == (
        ip_network("127.0.0.1/32"),
        ip_network("10.0.0.0/8"),
        ip_network("::1/128"),
    )
    one = validate_config(
        with_sections(network={"allow": "192.168.1.0/24"}), {}
    )  # a single CIDR is a list of one
    assert one.network_allow == (ip_network("192.168.1.0/24"),)
    errors = errors_of(
        with_sections(network={"allow": ["127.0.0.1/32", "10.0.0.1/8", "localhost", 7], "deny": []})
    )
    assert errors["network.allow[1]"].startswith("10.0.0.1/8 has host bits set")
    assert errors["network.allow[2]"].startswith("'localhost' does not appear to be an IPv4 or IPv6 network")
    assert errors["network.allow[3]"] == 'expected a network in CIDR form, e.g. "127.0.0.1/32"'
    assert errors["network.deny"] == "unknown field (expected allow)"
    assert errors_of(with_sections(network=["127.0.0.1/32"]))["network"] == "expected an object {allow}"


def test_unless_must_name_a_later_step() -> None:
    funnel = json.loads(json.dumps(ONBOARDING["funnels"][0]))
    funnel["steps"][0]["actions"][1]["unless"] = ["sign_up", "development_api_call", "never_a_step"]
    funnel["steps"][1]["actions"] = {
        "type": "webhook",
        "unless": "sign_up",
        "args": {"url": "https://x.test"},
    }
    with pytest.raises(ConfigInvalid) as caught:
        validate_config({**ONBOARDING, "funnels": [funnel]}, {})
    messages = [str(error) for error in caught.value.errors]
    assert messages == [
        "funnels[0].steps[0].actions[1].unless: 'sign_up' is not a later step than 'sign_up' (the action would always be cancelled)",
        "funnels[0].steps[0].actions[1].unless: 'never_a_step' is not a step of funnel 'onboarding' "
        "(steps: sign_up, development_api_call, production_api_call)",
        "funnels[0].steps[1].actions.unless: 'sign_up' is not a later step than 'development_api_call' "
        "(the action would always be cancelled)",
    ]


def test_an_actions_guarantee_defaults_by_channel_and_can_be_set() -> None:
    (funnel,) = validate_config(ONBOARDING).funnels
    actions = [action for step in funnel.steps for action in step.actions]
    assert [(action.type, action.guarantee) for action in actions] == [
        ("slack", "at-most-once"),
        ("email", "at-most-once"),
        ("webhook", "at-least-once"),
    ]
    raw = json.loads(json.dumps(ONBOARDING))
    raw["funnels"][0]["steps"][0]["actions"][0]["guarantee"] = "at-least-once"
    raw["funnels"][0]["steps"][2]["actions"]["guarantee"] = "at-most-once"
    (funnel,) = validate_config(raw).funnels
    assert [action.guarantee for step in funnel.steps for action in step.actions] == [
        "at-least-once",
        "at-most-once",
        "at-most-once",
    ]


def test_an_unknown_guarantee_is_reported_with_its_path() -> None:
    raw = json.loads(json.dumps(ONBOARDING))
    raw["funnels"][0]["steps"][0]["actions"][1]["guarantee"] = "exactly-once"
    raw["funnels"][0]["steps"][2]["actions"]["guarantee"] = True
    errors = errors_of(raw)
    expected = "expected one of at-least-once, at-most-once"
    assert errors["funnels[0].steps[0].actions[1].guarantee"] == expected
    assert errors["funnels[0].steps[2].actions.guarantee"] == expected


def holdout_config(value: Any) -> dict[str, Any]:
    action = {"type": "webhook", "args": {"url": "https://x.test"}, "holdout": value}
    return {
        "models": [{"name": "customer"}],
        "funnels": [{"id": "f", "forModels": "customer", "steps": [{"event": "e", "actions": [action]}]}],
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("60%", "at most 50%"),
        ("ten percent", "expected a percentage"),
        (10, "expected a percentage"),
        ("-5%", "expected a percentage"),
        ("2.555%", "expected a percentage"),
    ],
)
def test_a_bad_holdout_is_an_error_at_its_path(value: Any, problem: str) -> None:
    with pytest.raises(ConfigInvalid) as raised:
        validate_config(holdout_config(value))
    assert "funnels[0].steps[0].actions[0].holdout" in str(raised.value)
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("value", "basis_points"), [("10%", 1_000), ("2.5%", 250), ("0%", 0), ("50%", 5_000)]
)
def test_a_holdout_is_read_in_basis_points(value: str, basis_points: int) -> None:
    config = validate_config(holdout_config(value))
    assert config.funnels[0].steps[0].actions[0].holdout_bp == basis_points


def goal_config(goal: Any) -> dict[str, Any]:
    action = {"type": "webhook", "args": {"url": "https://x.test"}, "holdout": "10%", "goal": goal}
    steps = [{"event": "sign_up"}, {"event": "activate", "actions": [action]}, {"event": "pay"}]
    return {
        "models": [{"name": "customer"}],
        "funnels": [{"id": "f", "forModels": "customer", "steps": steps}],
    }


def test_a_goal_is_a_later_step_with_a_window() -> None:
    action = validate_config(goal_config({"event": "pay", "within": "7d"})).funnels[0].steps[1].actions[0]
    assert (action.goal_event, action.goal_within) == ("pay", timedelta(days=7))
    default = validate_config(goal_config({"event": "pay"})).funnels[0].steps[1].actions[0]
    assert default.goal_within == timedelta(days=14)


@pytest.mark.parametrize(
    ("goal", "path", "problem"),
    [
        ({"event": "sign_up"}, "goal.event", "'sign_up' is not a later step of funnel 'f'"),
        ({"event": "activate"}, "goal.event", "'activate' is not a later step"),
        ({"event": "nope"}, "goal.event", "'nope' is not a later step"),
        ({"event": "pay", "within": "soon"}, "goal.within", ""),
        ({"event": "pay", "by": "7d"}, "goal.by", "unknown field (expected event, within)"),
        ("pay", "goal", "expected an object {event, within?}"),
    ],
)
def test_a_bad_goal_is_an_error_at_its_path(goal: Any, path: str, problem: str) -> None:
    with pytest.raises(ConfigInvalid) as raised:
        validate_config(goal_config(goal))
    assert f"funnels[0].steps[1].actions[0].{path}: {problem}" in str(raised.value)


@pytest.mark.parametrize(
    ("limit", "path", "problem"),
    [
        ({"channel": "fax", "max": 1, "per": "1d"}, "channel", "expected one of"),
        ({"channel": "email", "max": 0, "per": "1d"}, "max", "expected a whole number of at least 1"),
        ({"channel": "email", "max": True, "per": "1d"}, "max", "expected a whole number of at least 1"),
        ({"channel": "email", "max": 2, "per": "often"}, "per", "expected a duration"),
        ({"channel": "email", "max": 2, "per": "1d", "funnel": "nope"}, "funnel", "unknown funnel 'nope'"),
        ({"channel": "email", "max": 2, "per": "1d", "every": 1}, "every", "unknown field"),
    ],
)
def test_a_bad_limit_is_an_error_at_its_path(limit: dict[str, Any], path: str, problem: str) -> None:
    config = {**holdout_config("10%"), "limits": [limit]}
    with pytest.raises(ConfigInvalid) as raised:
        validate_config(config)
    assert f"limits[0].{path}: {problem}" in str(raised.value)


def test_limits_are_read_into_the_delivery_policy() -> None:
    config = validate_config(
        {
            **holdout_config("10%"),
            "limits": [
                {"channel": "email", "max": 2, "per": "1d"},
                {"channel": "webhook", "max": 1, "per": "1h", "funnel": "f"},
            ],
        }
    )
    assert [(limit.channel, limit.max, limit.per, limit.funnel) for limit in config.delivery.limits] == [
        ("email", 2, timedelta(days=1), None),
        ("webhook", 1, timedelta(hours=1), "f"),
    ]
