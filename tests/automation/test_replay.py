"""`funnels replay` through the CLI: what would fire when, on a virtual clock, with nothing sent.

Every URL and the SMTP server point at 127.0.0.1:9, where nothing listens: a real send would fail and show
as `failed` or `dead`, so a `sent` outcome proves the replay recorded the action instead of sending it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from funnels.automation.steprule import held_out, job_key
from funnels.cli import app
from funnels.examples import onboarding_funnel

CLOSED = "http://127.0.0.1:9"
T0 = "2026-04-01T09:00:00Z"
T0_MS = 1_775_034_000_000  # T0 in epoch milliseconds
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

ONBOARDING: dict[str, Any] = {
    "models": [{"name": "customer"}],
    "email": {"host": "127.0.0.1", "port": 9, "security": "none", "from": "team@example.com"},
    "funnels": [
        onboarding_funnel(
            slack={"url": f"{CLOSED}/slack", "content": "{{ displayName }} signed up"},
            reminder={
                "to": "{{ modelProperties.email }}",
                "subject": "Need a hand, {{ displayName }}?",
                "text": "You signed up via {{ eventProperties.source }}.",
            },
            converted={
                "type": "webhook",
                "args": {"url": f"{CLOSED}/converted", "body": {"customer": "{{ ids[0] }}"}},
            },
        )
    ],
}


def identify(ids: list[Any], name: str, when: str | int = T0, **properties: Any) -> dict[str, Any]:
    props = {"email": f"{name.lower()}@example.com", **properties}
    return {
        "type": "identify",
        "model": "customer",
        "ids": ids,
        "displayName": name,
        "properties": props,
        "timestamp": when,
    }


def at(ms: int) -> str:
    """Epoch milliseconds as the replay prints them."""
    from funnels.automation.replay import format_ms

    return format_ms(ms)


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def replay(tmp_path: Path, events: Path, *args: str, config: dict[str, Any] = ONBOARDING) -> Result:
    config_file = tmp_path / "funnels.json"
    config_file.write_text(json.dumps(config))
    return CliRunner().invoke(app, ["replay", str(events), "--config", str(config_file), *args])


def rows(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def short(row: dict[str, Any]) -> tuple[str, str, int, str, int, str, str, str]:
    return (
        row["time"],
        row["instance"],
        row["step"],
        row["event"],
        row["action"],
        row["type"],
        row["outcome"],
        row["summary"],
    )


def test_nothing_listens_on_the_closed_port() -> None:
    """The premise of every `sent` below: a real delivery to 127.0.0.1:9 would be refused."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", 9), timeout=2).close()


def test_onboarding_three_customers(tmp_path: Path) -> None:
    sign_up = {"source": "ads"}
    events = write(
        tmp_path / "events.ndjson",
        [
            # Out of time order on purpose; the identifies share the sign-ups' timestamps (file order wins).
            {"name": "development_api_call", "ids": [3], "timestamp": T0_MS + 3 * DAY_MS + 2 * HOUR_MS - 1},
            identify([1, "ada@example.com"], "Ada", T0_MS + HOUR_MS),
            {"name": "sign_up", "ids": [1], "properties": sign_up, "timestamp": T0_MS + HOUR_MS},
            identify([2], "Bob", "2026-04-01T10:30:00Z"),
            # /v0/events shape, epoch milliseconds
            {"event": "sign_up", "user_id": "2", "properties": sign_up, "timestamp": T0_MS + 90 * 60_000},
            identify([3], "Cy", T0),
            {
                "event": "sign_up",
                "ids": ["3"],
                "model": "customer",
                "properties": sign_up,
                "timestamp": "2026-04-01T11:00:00Z",
            },
            {"name": "development_api_call", "ids": ["ada@example.com"], "timestamp": "2026-04-02T10:00:00Z"},
            {"name": "production_api_call", "ids": [1], "timestamp": "2026-04-03T10:00:00+00:00"},
        ],
    )
    result = replay(tmp_path, events, "--format", "json")
    assert result.exit_code == 0, result.output
    output = rows(result)
    assert [short(row) for row in output] == [
        ("2026-04-01T10:00:00Z", "1", 1, "sign_up", 1, "slack", "sent", "Ada signed up"),
        ("2026-04-01T10:30:00Z", "2", 1, "sign_up", 1, "slack", "sent", "Bob signed up"),
        ("2026-04-01T11:00:00Z", "3", 1, "sign_up", 1, "slack", "sent", "Cy signed up"),
        (
            "2026-04-02T10:00:00Z",
            "1",
            1,
            "sign_up",
            2,
            "email",
            "cancelled (reached development_api_call)",
            "",
        ),
        (
            "2026-04-03T10:00:00Z",
            "1",
            3,
            "production_api_call",
            1,
            "webhook",
            "sent",
            f"POST {CLOSED}/converted",
        ),
        # Bob stalls: the reminder fires exactly 3 days after his sign-up
        (
            "2026-04-04T10:30:00Z",
            "2",
            1,
            "sign_up",
            2,
            "email",
            "sent",
            "to bob@example.com: Need a hand, Bob?",
        ),
        # Cy reaches development_api_call 1 ms before the reminder is due
        (
            "2026-04-04T10:59:59.999Z",
            "3",
            1,
            "sign_up",
            2,
            "email",
            "cancelled (reached development_api_call)",
            "",
        ),
    ]
    bob_mail = output[5]
    assert bob_mail["time_ms"] == T0_MS + 90 * 60_000 + 3 * DAY_MS
    assert bob_mail["args"] == {
        "to": "bob@example.com",
        "subject": "Need a hand, Bob?",
        "text": "You signed up via ads.",
    }
    assert output[4]["args"]["body"] == {"customer": "1"}
    assert {row["model"] for row in output} == {"customer"} and {row["funnel"] for row in output} == {
        "onboarding"
    }
    assert (
        result.stderr.strip()
        == "9 events, 3 instances, 5 actions would fire, 2 cancelled, 0 failed, 0 pending"
    )


def test_table_format_and_json_array(tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    events.write_text(
        json.dumps(
            [
                identify(["ada"], "[b]Ada[/b]", email="ada@example.com"),  # markup is printed as written
                {"name": "sign_up", "ids": ["ada"], "properties": {"source": "ads"}, "timestamp": T0},
                {"name": "sign_up", "ids": ["nobody"], "timestamp": T0},
                {"name": "sign_up", "ids": ["ada"]},
            ],
            indent=2,
        )
    )
    result = replay(tmp_path, events)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    slack = next(line for line in lines if "1 slack" in line)
    assert "2026-04-01T09:00:00Z" in slack and "customer ada" in slack and "[b]Ada[/b] signed up" in slack
    email = next(line for line in lines if "2 email" in line)
    assert "2026-04-04T09:00:00Z" in email and "to ada@example.com: Need a hand, [b]Ada[/b]?" in email
    assert lines[-1] == "3 events, 1 instances, 2 actions would fire, 0 cancelled, 0 failed, 0 pending"
    assert f"{events} item 4: timestamp: is required to replay an event" in result.stderr
    assert (
        f"1 step event(s) named no known instance (send its identify first): {events} item 3" in result.stderr
    )


def test_bad_lines_are_reported_with_their_line_and_skipped(tmp_path: Path) -> None:
    events = write(
        tmp_path / "history.jsonl",
        [
            identify(["ada"], "Ada"),
            "{not json",
            "",  # blank lines are skipped, not errors
            {"name": "sign_up", "ids": ["ada"]},
            {"type": "identify", "model": "robot", "ids": ["r2"], "timestamp": T0},
            {"name": "sign_up", "timestamp": T0},
            "[1, 2]",
            {"name": "sign_up", "ids": ["ada"], "timestamp": "yesterday"},
            {"event": "sign_up", "user_id": "", "timestamp": T0},
            {"type": "identify", "ids": ["x"], "timestamp": T0},
            {
                "name": "sign_up",
                "ids": ["ada"],
                "properties": {"source": "ads"},
                "timestamp": "2026-04-01T09:05:00Z",
            },
        ],
    )
    result = replay(tmp_path, events, "--format", "json")
    assert result.exit_code == 1
    reported = [line for line in result.stderr.splitlines() if line.startswith(str(events))]
    messages = [line.removeprefix(f"{events} ") for line in reported]
    assert messages[0].startswith("line 2: not valid JSON: ")  # then orjson's own words
    assert messages[1:] == [
        "line 4: timestamp: is required to replay an event",
        "line 5: model: unknown model 'robot' (declared: customer)",
        "line 6: ids: Field required",
        "line 7: expected a JSON object (an identify or an event)",
        "line 8: timestamp: must be an ISO 8601 string or epoch milliseconds",
        "line 9: one of user_id or anonymous_id is required",
        "line 10: model: Field required",
    ]
    assert "skipped 8 bad lines" in result.stderr
    # the good lines still ran
    assert [(row["time"], row["type"], row["status"]) for row in rows(result)] == [
        ("2026-04-01T09:05:00Z", "slack", "sent"),
        ("2026-04-04T09:05:00Z", "email", "sent"),
    ]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    events = write(tmp_path / "events.ndjson", [identify(["ada"], "Ada")])
    bad = json.loads(json.dumps(ONBOARDING))
    bad["funnels"][0]["steps"][0]["actions"][0]["type"] = "fax"
    bad["funnels"][0]["steps"][0]["actions"][1]["unless"] = "never_a_step"
    result = replay(tmp_path, events, config=bad)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "funnels[0].steps[0].actions[0].type: unknown action type 'fax'" in result.stderr
    assert (
        "funnels[0].steps[0].actions[1].unless: 'never_a_step' is not a step of funnel 'onboarding'"
        in result.stderr
    )
    assert "2 problem(s) in" in result.stderr and "the config" in result.stderr

    missing = replay(tmp_path, tmp_path / "nope.ndjson")
    assert missing.exit_code == 2 and "nope.ndjson: no such file" in missing.stderr
    assert replay(tmp_path, events, "--from", "April").exit_code == 2
    assert replay(tmp_path, events, "--format", "yaml").exit_code == 2
    reversed_ = replay(tmp_path, events, "--from", "2026-04-02", "--to", "2026-04-01")
    assert reversed_.exit_code == 2 and "--from must not be after --to" in reversed_.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('[{"name": "sign_up"},')
    assert replay(tmp_path, broken).exit_code == 2


def test_from_and_to_filter_events_and_leave_jobs_pending(tmp_path: Path) -> None:
    events = write(
        tmp_path / "events.ndjson",
        [
            identify(["early"], "Early", "2026-03-30T09:00:00Z"),
            {"name": "sign_up", "ids": ["early"], "timestamp": "2026-03-31T09:00:00Z"},  # before --from
            identify(["ada"], "Ada"),
            {
                "name": "sign_up",
                "ids": ["ada"],
                "properties": {"source": "ads"},
                "timestamp": "2026-04-01T12:00:00Z",
            },
            identify(["late"], "Late", "2026-04-05T09:00:00Z"),  # after --to
            {"name": "sign_up", "ids": ["late"], "timestamp": "2026-04-05T10:00:00Z"},
        ],
    )
    result = replay(tmp_path, events, "--from", "2026-04-01", "--to", "2026-04-03", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [short(row) for row in rows(result)] == [
        ("2026-04-01T12:00:00Z", "ada", 1, "sign_up", 1, "slack", "sent", "Ada signed up"),
        # the clock stops at the end of --to's day; the reminder was due a day later
        (
            "2026-04-03T23:59:59.999Z",
            "ada",
            1,
            "sign_up",
            2,
            "email",
            "pending until 2026-04-04T12:00:00Z",
            "",
        ),
    ]
    assert rows(result)[1]["status"] == "pending"
    assert (
        result.stderr.strip()
        == "2 events, 1 instances, 1 actions would fire, 0 cancelled, 0 failed, 1 pending"
    )

    # A date-time --to: events up to that instant; the reminder fires when the clock passes it
    until = replay(
        tmp_path, events, "--from", "2026-04-01T00:00:00Z", "--to", "2026-04-04T12:00:00Z", "--format", "json"
    )
    assert [(row["time"], row["type"], row["status"]) for row in rows(until)] == [
        ("2026-04-01T12:00:00Z", "slack", "sent"),
        ("2026-04-04T12:00:00Z", "email", "sent"),
    ]


def test_a_template_error_is_a_dead_row(tmp_path: Path) -> None:
    config = json.loads(json.dumps(ONBOARDING))
    config["funnels"][0]["steps"][0]["actions"][0]["args"]["content"] = (
        "{{ displayName }} on {{ modelProperties.plan }}"
    )
    events = write(
        tmp_path / "events.ndjson",
        [
            identify(["ada"], "Ada", plan="pro"),
            identify(["bob"], "Bob"),  # no plan: the Slack template fails for Bob only
            {"name": "sign_up", "ids": ["ada"], "properties": {"source": "ads"}, "timestamp": T0},
            {"name": "sign_up", "ids": ["bob"], "properties": {"source": "ads"}, "timestamp": T0},
        ],
    )
    result = replay(tmp_path, events, "--format", "json", config=config)
    assert result.exit_code == 0, result.output
    slack = [
        (row["instance"], row["status"], row["outcome"], row["summary"])
        for row in rows(result)
        if row["type"] == "slack"
    ]
    assert slack == [
        ("ada", "sent", "sent", "Ada on pro"),
        ("bob", "dead", "dead: template: args.content: modelProperties.plan is undefined", ""),
    ]
    assert "4 events, 2 instances, 3 actions would fire, 0 cancelled, 1 failed, 0 pending" in result.stderr


def test_quiet_hours_shift_the_fire_time(tmp_path: Path) -> None:
    config = json.loads(json.dumps(ONBOARDING))
    reminder = config["funnels"][0]["steps"][0]["actions"][1]
    reminder |= {"delay": "1h", "notBefore": 9, "notAfter": "17:00"}
    events = write(
        tmp_path / "events.ndjson",
        [
            identify(["taro"], "Taro", timezone="Asia/Tokyo"),  # UTC+9, no DST
            identify(["uma"], "Uma"),  # no timezone: UTC
            {
                "name": "sign_up",
                "ids": ["taro"],
                "properties": {"source": "ads"},
                "timestamp": "2026-04-01T10:00:00Z",
            },
            {
                "name": "sign_up",
                "ids": ["uma"],
                "properties": {"source": "ads"},
                "timestamp": "2026-04-01T10:00:00Z",
            },
        ],
    )
    result = replay(tmp_path, events, "--format", "json", config=config)
    assert result.exit_code == 0, result.output
    mails = [(row["instance"], row["time"], row["outcome"]) for row in rows(result) if row["type"] == "email"]
    assert mails == [
        ("uma", "2026-04-01T11:00:00Z", "sent"),  # 11:00 UTC is inside 09:00–17:00 UTC
        ("taro", "2026-04-02T00:00:00Z", "sent"),  # due 20:00 in Tokyo: waits for 09:00 there
    ]


def test_replay_output_shows_no_secrets(tmp_path: Path) -> None:
    config = json.loads(json.dumps(ONBOARDING))
    actions = config["funnels"][0]["steps"][0]["actions"]
    actions[0]["args"] = {"channel": "#growth", "token": "xoxb-replay-secret", "content": "{{ displayName }}"}
    actions.append(
        {
            "type": "webhook",
            "args": {
                "url": f"{CLOSED}/hook?token=query-secret",
                "headers": {"Authorization": "Bearer header-secret", "X-Team": "growth"},
            },
        }
    )
    events = write(
        tmp_path / "events.ndjson",
        [identify(["ada"], "Ada"), {"name": "sign_up", "ids": ["ada"], "timestamp": T0}],
    )
    for output in ("json", "table"):
        result = replay(tmp_path, events, "--format", output, config=config)
        assert result.exit_code == 0, result.output
        for secret in ("xoxb-replay-secret", "query-secret", "header-secret"):
            assert secret not in result.output
    result = replay(tmp_path, events, "--format", "json", config=config)
    sent = {row["type"]: row["args"] for row in rows(result) if row["status"] == "sent"}
    assert sent["slack"]["token"] == "***" and sent["slack"]["content"] == "Ada"
    assert sent["webhook"]["headers"] == {"Authorization": "***", "X-Team": "growth"}


def test_a_holdout_ends_its_share_held_out_and_sends_them_nothing(tmp_path: Path) -> None:
    config = json.loads(json.dumps(ONBOARDING))
    config["funnels"][0]["steps"][0]["actions"][0]["holdout"] = "50%"  # the Slack message
    names = [f"c{index}" for index in range(20)]
    events = write(
        tmp_path / "events.ndjson",
        [identify([name], name.upper()) for name in names]
        + [
            {"name": "sign_up", "ids": [name], "properties": {"source": "ads"}, "timestamp": T0}
            for name in names
        ]
        # Every third calls the API an hour later: the Slack message's goal (the next step, within 14 days).
        + [
            {"name": "development_api_call", "ids": [name], "timestamp": T0_MS + HOUR_MS}
            for name in names[::3]
        ],
    )
    result = replay(tmp_path, events, "--format", "json", config=config)
    assert result.exit_code == 0, result.output
    slack = {
        row["instance"]: (row["status"], row["summary"]) for row in rows(result) if row["type"] == "slack"
    }
    funnel_id = config["funnels"][0]["id"]
    out = {name for name in names if held_out(job_key(funnel_id, "customer", name, 0, 0), 5_000)}
    assert 0 < len(out) < len(names)
    assert {name for name, (status, _) in slack.items() if status == "held_out"} == out
    assert all(slack[name] == ("sent", f"{name.upper()} signed up") for name in set(names) - out)
    assert all(slack[name][1] == "" for name in out)  # nothing rendered for them: nothing would go out
    assert f", {len(out)} held out" in result.stderr
    # What the holdout measured by the replay's end (3 days on: the others' 14-day windows are still open).
    called = set(names[::3])
    groups = []
    for name, members in (("treated", set(names) - out), ("held out", out)):
        converted = len(members & called)
        rate = f"{converted / converted * 100:.1f}%" if converted else "–"
        pending = len(members) - converted
        groups.append(
            f"{name} {converted} of {converted} converted ({rate})"
            + (f", {pending} pending" if pending else "")
        )
    line = (
        "holdout onboarding step 1 sign_up action 1 slack (50%), goal development_api_call within 14 d: "
        + "; ".join(groups)
    )
    assert line in result.stderr, result.stderr


def test_a_frequency_cap_ends_the_later_message_capped_and_the_summary_counts_it(tmp_path: Path) -> None:
    """`limits` in a replay: a second Slack message about the same customer within the day ends `capped`
    (its row says which limit), one sent a day later goes; the summary counts the capped ones."""
    config = json.loads(json.dumps(ONBOARDING))
    config["limits"] = [{"channel": "slack", "max": 1, "per": "1d"}]
    config["funnels"][0]["steps"][1]["actions"] = [
        {"type": "slack", "args": {"url": f"{CLOSED}/slack", "content": "{{ displayName }} called the API"}}
    ]
    events = write(
        tmp_path / "events.ndjson",
        [identify(["ada"], "Ada"), identify(["bob"], "Bob")]
        + [
            {"name": "sign_up", "ids": [name], "properties": {"source": "ads"}, "timestamp": T0}
            for name in ("ada", "bob")
        ]
        + [
            {"name": "development_api_call", "ids": ["ada"], "timestamp": T0_MS + HOUR_MS},  # within the day
            {"name": "development_api_call", "ids": ["bob"], "timestamp": T0_MS + DAY_MS + HOUR_MS},
        ],
    )
    result = replay(tmp_path, events, "--format", "json", config=config)
    assert result.exit_code == 0, result.output
    second = {row["instance"]: row for row in rows(result) if row["type"] == "slack" and row["step"] == 2}
    assert second["ada"]["status"] == "capped"
    assert "limit 1" in second["ada"]["outcome"], second["ada"]
    assert second["bob"]["status"] == "sent"
    assert ", 1 capped" in result.stderr, result.stderr
    assert "suppressed" not in result.stderr  # a replay starts with nobody opted out
