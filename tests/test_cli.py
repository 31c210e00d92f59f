"""The `funnels` command as a user runs it: a real subprocess over a real data directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.demo import DEMO_STEPS
from funnels.services import Services
from funnels.store.server_events import ServerEventStore
from tests.processes import client, create_key, free_port, start_server, wait_until

pytestmark = pytest.mark.process  # a real server or CLI subprocess

BIN = str(Path(sys.executable).parent / "funnels")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)


def test_keys_create_prints_only_the_key(tmp_path: Path) -> None:
    result = run("keys", "create", "--scope", "query:read", "--scope", "admin", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fk_")
    listed = run("keys", "list", "--data-dir", str(tmp_path))
    key_id = lines[0].split("_")[1]
    assert key_id in listed.stdout and "admin query:read" in listed.stdout
    assert run("keys", "revoke", key_id, "--data-dir", str(tmp_path)).returncode == 0
    assert run("keys", "revoke", key_id, "--data-dir", str(tmp_path)).returncode == 1


def test_keys_and_migrate_keep_state_in_postgresql_with_state_url(tmp_path: Path, postgres_url: str) -> None:
    """`--state-url` (or $FUNNELS_STATE_URL) puts the state in PostgreSQL: nothing is written to the data
    directory's file, and another data directory sees the same keys."""
    migrated = run("migrate", "--state-url", postgres_url, "--data-dir", str(tmp_path / "a"))
    assert migrated.stdout.splitlines() == [
        "schema revision before: none: a new state store",
        "schema revision after: 0007",
    ], migrated.stderr
    created = run(
        "keys", "create", "--scope", "admin", "--state-url", postgres_url, "--data-dir", str(tmp_path / "a")
    )
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.split("_")[1]
    listed = subprocess.run(
        [BIN, "keys", "list", "--data-dir", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FUNNELS_STATE_URL": postgres_url},
    )
    assert key_id in listed.stdout
    assert not (tmp_path / "a" / "state.sqlite3").exists() and not (tmp_path / "b" / "state.sqlite3").exists()
    refused = run("keys", "list", "--state-url", "mysql://root@127.0.0.1/x")
    assert refused.returncode == 1
    assert "a state URL must start with postgresql://" in refused.stderr


def test_keys_create_rejects_unknown_scope(tmp_path: Path) -> None:
    result = run("keys", "create", "--scope", "everything", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == "" and "scopes must be among" in result.stderr


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    result = run("demo", "--no-serve", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    url = next(line for line in result.stdout.splitlines() if line.startswith("Dashboard:"))
    from urllib.parse import parse_qsl, urlsplit

    return data_dir, dict(parse_qsl(urlsplit(url.split(" ", 1)[1]).query))


def test_query_json_is_exactly_the_api_body(demo_dir: tuple[Path, dict[str, str]]) -> None:
    data_dir, params = demo_dir
    result = run(
        "query", "--data-dir", str(data_dir), "--date-from", params["date_from"], "--date-to", params["date_to"],
        "--steps", params["steps"], "--breakdown", "device", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cli_body = json.loads(result.stdout)
    svc = Services.open(data_dir)
    try:
        with TestClient(create_app(svc, run_shipper=False)) as client:
            key = run("keys", "create", "--scope", "query:read", "--data-dir", str(data_dir)).stdout.strip()
            api = client.get(
                "/v0/funnel",
                params={**params, "breakdown": "device"},
                headers={"Authorization": f"Bearer {key}"},
            )
    finally:
        svc.close()
    api_body = api.json()
    assert (
        set(cli_body) == set(api_body) == {"meta", "data", "rows", "rows_before_limit_at_least", "statistics"}
    )
    assert cli_body["meta"] == api_body["meta"] and cli_body["data"] == api_body["data"]
    assert cli_body["rows"] == 9 and cli_body["data"][0]["users"] > 0
    assert json.loads(params["steps"]) == DEMO_STEPS


def test_query_breaks_down_by_a_property_as_attributed(demo_dir: tuple[Path, dict[str, str]]) -> None:
    """`--breakdown properties.chain --breakdown-attribution step:3`: the swaps' chains, as the API answers;
    a bad attribution is refused naming it."""
    data_dir, params = demo_dir
    where = ("--data-dir", str(data_dir), "--date-from", params["date_from"], "--date-to", params["date_to"])
    options = ("--breakdown", "properties.chain", "--breakdown-attribution", "step:3")
    result = run("query", *where, "--steps", params["steps"], *options, "--format", "json")
    assert result.returncode == 0, result.stderr
    cli_body = json.loads(result.stdout)
    svc = Services.open(data_dir)
    try:
        with TestClient(create_app(svc, run_shipper=False)) as client:
            key = run("keys", "create", "--scope", "query:read", "--data-dir", str(data_dir)).stdout.strip()
            query = {**params, "breakdown": "properties.chain", "breakdown_attribution": "step:3"}
            api = client.get("/v0/funnel", params=query, headers={"Authorization": f"Bearer {key}"}).json()
    finally:
        svc.close()
    assert cli_body["data"] == api["data"]
    # Step 3 is a swap on ethereum: its users are all in that group; who did not swap have no step-3 value.
    last = {row["breakdown"]: row["users"] for row in cli_body["data"] if row["step"] == 3}
    assert last["ethereum"] > 0 and last.get("(none)", 0) == 0
    refused = run(
        "query",
        *where,
        "--steps",
        params["steps"],
        "--breakdown",
        "device",
        "--breakdown-attribution",
        "step:9",
    )
    assert refused.returncode == 2 and "breakdown_attribution" in refused.stderr


def test_query_saves_opens_and_compares_saved_funnels(demo_dir: tuple[Path, dict[str, str]]) -> None:
    data_dir, params = demo_dir
    where = ("--data-dir", str(data_dir))
    funnel = ("--date-from", params["date_from"], "--date-to", params["date_to"], "--steps", params["steps"])
    saved = run(
        "query", *where, *funnel, "--compare", "previous_period", "--save", "Demo", "--format", "json"
    )
    assert saved.returncode == 0, saved.stderr
    assert "saved as 'Demo': /funnels?saved=" in saved.stderr
    body = json.loads(saved.stdout)
    assert body["comparison"]["compare"] == "previous_period" and len(body["comparison"]["data"]) == 3
    assert [row["users"] for row in body["comparison"]["data"]] == [row["users"] for row in body["data"]]

    listed = json.loads(run("saved", "list", *where, "--format", "json").stdout)
    assert [(item["name"], item["version"]) for item in listed["data"]] == [("Demo", 1)]
    funnel_id = listed["data"][0]["id"]
    shown = json.loads(run("saved", "show", funnel_id, *where).stdout)
    assert shown["parameters"] == {
        "date_from": params["date_from"],
        "date_to": params["date_to"],
        "steps": params["steps"],
        "compare": "previous_period",
    }

    # By name, the saved parameters run as they were saved; options given override them.
    again = json.loads(run("query", *where, "--saved", "Demo", "--format", "json").stdout)
    assert again["data"] == body["data"] and again["comparison"]["data"] == body["comparison"]["data"]
    raw = json.loads(run("query", *where, "--saved", "Demo", "--identity", "raw", "--format", "json").stdout)
    assert raw["data"][0]["users"] > body["data"][0]["users"]  # anonymous ids counted on their own
    table = run("query", *where, "--saved", funnel_id)
    assert table.returncode == 0 and "compared with" in table.stdout and "prev. users" in table.stdout
    weekly = run("query", *where, "--saved", "Demo", "--interval", "week", "--format", "json")
    assert weekly.returncode == 0 and "comparison" not in json.loads(weekly.stdout)  # the funnel's alone

    refusals = [
        (("query", *where, "--saved", "nope"), 1, "No saved funnel is named 'nope'"),
        (("query", *where, *funnel, "--save", "Demo"), 1, "A saved funnel is already named 'Demo'"),
        (
            ("query", *where, "--saved", "Demo", "--compare", "last_year"),
            2,
            "compare: must be previous_period",
        ),
        (("query", *where, *funnel, "--save", "x" * 201), 2, "name: must be at most 200 characters"),
        (
            ("query", *where, "--saved", "Demo", "--compare", "previous_period", "--interval", "day"),
            2,
            "--compare",
        ),
        (("query", *where, "--steps", "[]"), 2, "date_from: required"),
    ]
    for args, status, message in refusals:
        refused = run(*args)
        assert refused.returncode == status, (args, refused.stderr)
        assert message in refused.stderr and "Traceback" not in refused.stderr, (args, refused.stderr)

    assert run("saved", "delete", "Demo", *where).stdout == f"deleted 'Demo' ({funnel_id})\n"
    assert run("saved", "delete", "Demo", *where).returncode == 1
    assert json.loads(run("saved", "list", *where, "--format", "json").stdout) == {"data": [], "rows": 0}


def test_query_table_and_parameter_errors(demo_dir: tuple[Path, dict[str, str]]) -> None:
    data_dir, params = demo_dir
    table = run(
        "query",
        "--data-dir",
        str(data_dir),
        "--date-from",
        params["date_from"],
        "--date-to",
        params["date_to"],
        "--steps",
        params["steps"],
    )
    assert table.returncode == 0 and "connect::1" in table.stdout
    bad = run(
        "query", "--data-dir", str(data_dir), "--date-from", "2026-02-30", "--date-to", "x", "--steps", "[]"
    )
    assert bad.returncode == 2
    assert "date_from" in bad.stderr and "date_to" in bad.stderr and "steps" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_query_exclusions(demo_dir: tuple[Path, dict[str, str]]) -> None:
    """--exclusions is the API's parameter: excluding a page view between the page and the connect keeps
    only conversions whose last page view before the connect is their step 1; a bad one is named."""
    data_dir, params = demo_dir
    query = ["query", "--data-dir", str(data_dir), "--date-from", params["date_from"]]
    query += ["--date-to", params["date_to"], "--steps", params["steps"], "--format", "json"]
    plain = run(*query)
    page = {"type": "event", "event": "page", "from_step": 1, "to_step": 2}
    excluded = run(*query, "--exclusions", json.dumps([page]))
    assert plain.returncode == excluded.returncode == 0, excluded.stderr
    before = [row["users"] for row in json.loads(plain.stdout)["data"]]
    after = [row["users"] for row in json.loads(excluded.stdout)["data"]]
    assert after[0] == before[0] and after[1] <= before[1] and after[2] <= before[2]
    connect = {"type": "track", "event": "connect", "from_step": 1, "to_step": 2}  # its own event
    assert [
        row["users"] for row in json.loads(run(*query, "--exclusions", json.dumps([connect])).stdout)["data"]
    ][1:] == [0, 0]
    bad = run(*query, "--exclusions", json.dumps([page | {"to_step": 4}]))
    assert bad.returncode == 2 and "exclusions.0.to_step" in bad.stderr


def test_query_hold_constant(demo_dir: tuple[Path, dict[str, str]]) -> None:
    """--hold-constant is the API's parameter: the same entrants, never more conversions; a bad one is named."""
    data_dir, params = demo_dir
    query = ["query", "--data-dir", str(data_dir), "--date-from", params["date_from"]]
    query += ["--date-to", params["date_to"], "--steps", params["steps"], "--format", "json"]
    plain, held = run(*query), run(*query, "--hold-constant", '["device"]')
    assert plain.returncode == held.returncode == 0, held.stderr
    before = [row["users"] for row in json.loads(plain.stdout)["data"]]
    after = [row["users"] for row in json.loads(held.stdout)["data"]]
    assert after[0] == before[0] and all(a <= b for a, b in zip(after, before, strict=True))
    bad = run(*query, "--hold-constant", '["chain"]')
    assert bad.returncode == 2 and "hold_constant.0" in bad.stderr
    strict = run(*query, "--hold-constant", '["device"]', "--funnel-type", "strict")
    excluded = json.dumps([{"type": "track", "event": "mint", "from_step": 1, "to_step": 2}])
    with_exclusions = run(*query, "--hold-constant", '["device"]', "--exclusions", excluded)
    for result in (strict, with_exclusions):  # once refused with hold_constant named
        assert result.returncode == 0, result.stderr
        users = [row["users"] for row in json.loads(result.stdout)["data"]]
        assert users[0] == before[0] and all(a <= b for a, b in zip(users, after, strict=True))


def test_query_sample(demo_dir: tuple[Path, dict[str, str]]) -> None:
    """--sample is the API's parameter: the sample's users scaled, stated in the JSON and under the table;
    a bad one is named, and the analyses that do not sample refuse it."""
    data_dir, params = demo_dir
    query = ["query", "--data-dir", str(data_dir), "--date-from", params["date_from"]]
    query += ["--date-to", params["date_to"], "--steps", params["steps"]]
    sampled = run(*query, "--sample", "0.5", "--format", "json")
    assert sampled.returncode == 0, sampled.stderr
    body = json.loads(sampled.stdout)
    assert body["sample"]["rate"] == 0.5 and body["sample"]["unit"] == "person"
    first = body["data"][0]
    assert first["users"] == round(first["users_sampled"] / 0.5) and first["users_sampled"] > 0
    table = run(*query, "--sample", "0.5")
    assert table.returncode == 0, table.stderr
    assert "in sample" in table.stdout and "users 95%" in table.stdout
    assert "from a sample of 50% of persons" in table.stderr
    bad = run(*query, "--sample", "5")
    assert bad.returncode == 2 and "sample" in bad.stderr and "Traceback" not in bad.stderr
    weekly = run(*query, "--sample", "0.5", "--interval", "week")
    assert weekly.returncode == 2 and "only GET /v0/funnel answers from a sample" in weekly.stderr


def test_query_time_to_convert_and_trends(demo_dir: tuple[Path, dict[str, str]]) -> None:
    """`funnels query --from-step/--to-step` and `--interval`: the API's bodies as JSON, tables for people,
    each new parameter validated as the API does (exit 2), and the two refused together."""
    data_dir, params = demo_dir
    base = [
        "query", "--data-dir", str(data_dir), "--date-from", params["date_from"], "--date-to", params["date_to"],
        "--steps", params["steps"],
    ]  # fmt: skip
    funnel = json.loads(run(*base, "--format", "json").stdout)
    measured = run(*base, "--from-step", "1", "--to-step", "3", "--format", "json")
    assert measured.returncode == 0, measured.stderr
    body = json.loads(measured.stdout)
    assert body["data"][0]["users"] == funnel["data"][2]["users"] > 0
    assert body["data"][0]["p50_seconds"] == funnel["data"][2]["median_seconds_from_start"]
    trends = run(*base, "--interval", "week", "--format", "json")
    assert trends.returncode == 0, trends.stderr
    rows = json.loads(trends.stdout)["data"]
    assert sum(row["entered"] for row in rows) == funnel["data"][0]["users"]
    assert sum(row["converted"] for row in rows) == funnel["data"][2]["users"]
    table = run(*base, "--from-step", "2", "--to-step", "3", "--bins", "5")
    assert table.returncode == 0 and "p90" in table.stdout and "connect::1 → " in table.stdout
    weekly = run(*base, "--interval", "week", "--breakdown", "device")
    assert weekly.returncode == 0 and "entered" in weekly.stdout and "closed" in weekly.stdout
    bad = run(*base, "--from-step", "3", "--to-step", "9", "--bins", "0")
    assert bad.returncode == 2 and "to_step" in bad.stderr and "bins" in bad.stderr
    assert run(*base, "--interval", "hour").returncode == 2
    both = run(*base, "--interval", "day", "--to-step", "2")
    assert both.returncode == 2 and "separate queries" in both.stderr


def test_query_people(demo_dir: tuple[Path, dict[str, str]]) -> None:
    """`funnels query --people` (and --step, --outcome, --limit, --cursor): the API's body as JSON, pages that
    follow each other, a table and CSV for people, each new parameter validated as the API does (exit 2)."""
    data_dir, params = demo_dir
    base = [
        "query", "--data-dir", str(data_dir), "--date-from", params["date_from"], "--date-to", params["date_to"],
        "--steps", params["steps"],
    ]  # fmt: skip
    funnel = json.loads(run(*base, "--format", "json").stdout)
    first = run(*base, "--step", "2", "--limit", "3", "--format", "json")
    assert first.returncode == 0, first.stderr
    body = json.loads(first.stdout)
    assert body["users"] == funnel["data"][1]["users"] > 3 and body["rows"] == 3
    second = json.loads(
        run(*base, "--step", "2", "--limit", "3", "--cursor", body["next_cursor"], "--format", "json").stdout
    )
    keys = [row["user_key"] for row in body["data"] + second["data"]]
    assert len(set(keys)) == 6
    dropped = json.loads(run(*base, "--outcome", "dropped", "--step", "3", "--format", "json").stdout)
    assert dropped["users"] == funnel["data"][1]["users"] - funnel["data"][2]["users"]
    by_device = funnel_rows = json.loads(run(*base, "--breakdown", "device", "--format", "json").stdout)[
        "data"
    ]
    label = by_device[0]["breakdown"]
    bar = json.loads(
        run(*base, "--breakdown", "device", "--breakdown-value", label, "--format", "json").stdout
    )
    assert bar["users"] == funnel_rows[0]["users"] and {row["breakdown"] for row in bar["data"]} <= {label}
    table = run(*base, "--people", "--limit", "2")
    assert table.returncode == 0 and "last step" in table.stdout and "--cursor" in table.stderr
    csv = run(*base, "--people", "--limit", "2", "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("user_key,last_step,step_1_at")
    bad = run(*base, "--outcome", "gone", "--cursor", "x")
    assert bad.returncode == 2 and "outcome" in bad.stderr and "cursor" in bad.stderr
    assert run(*base, "--format", "csv").returncode == 2  # csv is for people only
    both = run(*base, "--interval", "day", "--people")
    assert both.returncode == 2 and "separate queries" in both.stderr


def test_catalog_tables_and_parameter_errors(demo_dir: tuple[Path, dict[str, str]]) -> None:
    """`funnels catalog`: a table per lookup for people; parameters validated as the API does (exit 2)."""
    data_dir = str(demo_dir[0])
    names = run("catalog", "names", "--type", "track", "--data-dir", data_dir)
    assert names.returncode == 0, names.stderr
    assert "connect" in names.stdout and "swap" in names.stdout and "last seen" in names.stdout
    properties = run("catalog", "properties", "--type", "track", "--event", "swap", "--data-dir", data_dir)
    assert properties.returncode == 0 and "chain" in properties.stdout and "ethereum" in properties.stdout
    values = run(
        "catalog", "values", "--type", "track", "--event", "swap", "--operand", "chain", "--q", "eth",
        "--data-dir", data_dir,
    )  # fmt: skip
    assert values.returncode == 0 and "ethereum" in values.stdout and "base" not in values.stdout
    bad = run("catalog", "names", "--limit", "0", "--date-from", "2026-02-30", "--data-dir", data_dir)
    assert bad.returncode == 2 and "limit" in bad.stderr and "date_from" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_query_stitches_identities_unless_identity_is_raw(tmp_path: Path) -> None:
    from tests.analytics.conftest import at, ev

    data_dir = tmp_path / "data"
    svc = Services.open(data_dir)
    try:  # an anonymous page view, then the identify that joins it to u1, who connects
        svc.events.insert_events(
            [
                ev("", at(0, 0), "page", anonymous_id="a1"),
                ev("u1", at(0, 1000), "identify", anonymous_id="a1"),
                ev("u1", at(0, 2000), "track", "connect"),
            ]
        )
    finally:
        svc.close()
    steps = json.dumps(
        [
            {"type": "event", "event": "page", "name": "page"},
            {"type": "track", "event": "connect", "name": "connect"},
        ]
    )
    query = ["query", "--data-dir", str(data_dir), "--date-from", "2026-04-01", "--date-to", "2026-04-01", "--steps", steps, "--format", "json"]  # fmt: skip
    answers = {}
    for identity in (None, "stitched", "raw"):
        result = run(*query, *(["--identity", identity] if identity else []))
        assert result.returncode == 0, result.stderr
        answers[identity] = [row["users"] for row in json.loads(result.stdout)["data"]]
    assert answers == {None: [1, 1], "stitched": [1, 1], "raw": [1, 0]}
    bad = run(*query, "--identity", "persons")
    assert bad.returncode == 2 and "identity: must be stitched or raw" in bad.stderr


def test_query_refuses_clearly_while_an_unannounced_process_holds_the_data_dir(tmp_path: Path) -> None:
    """A process holding the event store without a `server.json` (a server of an earlier release, say):
    the CLI cannot go through it, and says so. (With the file, it goes through it: test_cli_beside.py.)"""
    data_dir = tmp_path / "data"
    server = start_server(data_dir, free_port())
    (data_dir / "server.json").unlink()
    try:
        steps = json.dumps(DEMO_STEPS)
        result = run(
            "query",
            "--data-dir",
            str(data_dir),
            "--date-from",
            "2026-04-01",
            "--date-to",
            "2026-04-02",
            "--steps",
            steps,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert result.returncode == 1
    assert "in use by another process" in result.stderr and "Traceback" not in result.stderr


OLD_STATE = Path(__file__).parent / "store" / "fixtures" / "state-0af07ab.sqlite3"


def test_migrate_upgrades_a_data_directory_of_the_release_before_and_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(OLD_STATE, data_dir / "state.sqlite3")
    first = run("migrate", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "schema revision before: none recorded: written before migrations, recognised as 0001",
        "schema revision after: 0007",
    ]
    again = run("migrate", "--data-dir", str(data_dir))
    assert again.stdout.splitlines() == ["schema revision before: 0007", "schema revision after: 0007"]
    new = run("migrate", "--data-dir", str(tmp_path / "new"))
    assert new.stdout.splitlines()[0] == "schema revision before: none: a new state store"


def test_serve_and_the_other_commands_refuse_a_schema_newer_than_they_know(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run("migrate", "--data-dir", str(data_dir)).returncode == 0
    with sqlite3.connect(data_dir / "state.sqlite3") as db:  # as a later release would leave it
        db.execute("UPDATE alembic_version SET version_num = 'f00d'")
    db.close()
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps({"models": [{"name": "customer"}], "funnels": []}))
    port = str(free_port())
    for args in (
        ["serve", "--port", port],
        ["serve", "--port", port, "--config", str(config)],
        ["worker", "--config", str(config)],
        ["keys", "list"],
        ["migrate"],
    ):
        result = run(*args, "--data-dir", str(data_dir))
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.splitlines() == [
            f"error: the state store {data_dir / 'state.sqlite3'} is at schema revision f00d, which this "
            "version of funnels does not know (it knows up to 0007; a newer release wrote it): not running on it"
        ], args
    with sqlite3.connect(data_dir / "state.sqlite3") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("f00d",)]
    db.close()


def test_serve_with_events_url_ships_to_the_server_and_reports_it_healthy(tmp_path: Path) -> None:
    """`funnels serve --events-url` (the server backend, on clickhouse-connect's chDB interface): /healthz
    probes that store, events are shipped there, and nothing is stored in the data directory."""
    data, server_dir = tmp_path / "data", tmp_path / "server"
    key = create_key(data, "events:write")
    port = free_port()
    server = start_server(data, port, "--events-url", f"chdb://{server_dir}")
    try:
        with client(port, key) as http:
            assert http.get("/healthz").json()["status"] == "ok"
            for number in range(3):
                sent = http.post("/v0/events", json={"event": "signup", "user_id": f"u{number}"})
                assert sent.status_code == 200, sent.text
            wait_until(lambda: http.get("/healthz").json().get("shipper_backlog") == "0")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert not (data / "events").exists()
    store = ServerEventStore.on_chdb(server_dir)
    try:
        assert store.count() == 3 and store.max_log_seq() == 3
    finally:
        store.close()


def test_events_init_needs_a_server_and_a_cluster_it_has(tmp_path: Path) -> None:
    """`funnels events init --cluster` lays the layout out on a server's cluster: refused without a server,
    for a name that cannot be a cluster's, and (one line, exit 1) where the server has no such cluster;
    chDB has none, so the layout itself runs in tests/store/test_cluster.py against a real cluster."""
    env_free = run("events", "init", "--cluster", "analytics")
    assert env_free.returncode == 1 and "give --events-url" in env_free.stderr
    bad_name = run(
        "events", "init", "--cluster", "a'b", "--events-url", "http://u:s3cret@127.0.0.1:9/funnels"
    )
    assert (
        bad_name.returncode == 1 and "the cluster name" in bad_name.stderr and "s3cret" not in bad_name.stderr
    )
    missing = run("events", "init", "--cluster", "analytics", "--events-url", f"chdb://{tmp_path / 'events'}")
    assert missing.returncode == 1 and "knows no cluster analytics" in missing.stderr


def test_query_breaks_down_by_a_person_property(tmp_path: Path) -> None:
    """`--breakdown person.plan`: each user in the group of their latest identify's plan (one before the
    date range counts), as the API answers; an attribution other than first_touch is refused naming it."""
    from funnels.events import Event

    data_dir = tmp_path / "data"
    start = 1_775_001_600_000  # 2026-04-01
    rows = [("a", -30, "identify", {"plan": "free"}), ("a", -1, "identify", {"plan": "pro"})]
    rows += [("b", 0, "identify", {"plan": "team"}), ("c", 0, "identify", {"name": "Cy"})]
    rows += [(user, 1, "page", {}) for user in "abc"] + [("a", 2, "connect", {})]
    svc = Services.open(data_dir)
    try:
        svc.events.insert_events(
            [
                Event(
                    event_id=f"e{i}",
                    type="track" if kind == "connect" else kind,
                    event=kind,
                    user_key=user,
                    user_id=user,
                    ts_ms=start + day * 86_400_000 + i,
                    received_ms=start,
                    properties=properties,
                    columns={},
                )
                for i, (user, day, kind, properties) in enumerate(rows)
            ]
        )
    finally:
        svc.close()
    steps = '[{"type":"event","event":"page","name":"p"},{"type":"track","event":"connect","name":"c"}]'
    where = ("--data-dir", str(data_dir), "--date-from", "2026-04-02", "--date-to", "2026-04-03")
    result = run("query", *where, "--steps", steps, "--breakdown", "person.plan", "--format", "json")
    assert result.returncode == 0, result.stderr
    groups = {(row["breakdown"], row["step"]): row["users"] for row in json.loads(result.stdout)["data"]}
    assert groups == {
        ("(none)", 1): 1,
        ("(none)", 2): 0,
        ("pro", 1): 1,
        ("pro", 2): 1,
        ("team", 1): 1,
        ("team", 2): 0,
    }
    table = run("query", *where, "--steps", steps, "--breakdown", "person.plan")
    assert table.returncode == 0 and "pro" in table.stdout, table.stderr
    refused = run(
        "query",
        *where,
        "--steps",
        steps,
        "--breakdown",
        "person.plan",
        "--breakdown-attribution",
        "last_touch",
    )
    assert refused.returncode == 2 and "breakdown_attribution" in refused.stderr


def test_query_aggregate_by_counts_the_demos_organizations(demo_dir: tuple[Path, dict[str, str]]) -> None:
    """--aggregate-by organization: the demo's customers (identified with their organization as parent)
    counted by organization, the same answer as the API's with the config loaded; a model the --config
    does not declare is named (exit 2)."""
    from funnels.demo_automation import ORGANIZATIONS

    data_dir, _ = demo_dir
    steps = json.dumps(
        [
            {"type": "track", "event": name, "name": name}
            for name in ("sign_up", "development_api_call", "production_api_call")
        ]
    )
    config = str(data_dir / "funnels.yaml")
    query = ["query", "--data-dir", str(data_dir), "--date-from", "2020-01-01", "--date-to", "2035-12-31"]
    query += ["--steps", steps, "--format", "json"]
    customers = run(*query)
    grouped = run(*query, "--aggregate-by", "organization", "--config", config)
    assert customers.returncode == grouped.returncode == 0, grouped.stderr
    by_customer = [row["users"] for row in json.loads(customers.stdout)["data"]]
    by_organization = [row["users"] for row in json.loads(grouped.stdout)["data"]]
    assert by_organization[0] == len(ORGANIZATIONS) < by_customer[0]
    assert all(0 < org <= users for org, users in zip(by_organization, by_customer, strict=True))
    svc = Services.open(data_dir, config_path=data_dir / "funnels.yaml")
    try:
        with TestClient(create_app(svc, run_shipper=False)) as client:
            key = run("keys", "create", "--scope", "query:read", "--data-dir", str(data_dir)).stdout.strip()
            api = client.get(
                "/v0/funnel",
                params={
                    "date_from": "2020-01-01",
                    "date_to": "2035-12-31",
                    "steps": steps,
                    "aggregate_by": "organization",
                },
                headers={"Authorization": f"Bearer {key}"},
            )
    finally:
        svc.close()
    assert api.status_code == 200, api.text
    assert api.json()["data"] == json.loads(grouped.stdout)["data"]
    bad = run(*query, "--aggregate-by", "team", "--config", config)
    assert bad.returncode == 2 and "aggregate_by" in bad.stderr and "organization" in bad.stderr


def test_query_aggregate_by_on_a_cluster_is_not_refused(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`funnels query --aggregate-by` on a cluster's event store (issue 14; the cluster simulated as in
    tests/analytics/test_aggregate_by_cluster.py): the model is checked against --config's models only, and
    its memberships are loaded, so the funnel counts the organization; an undeclared model is still exit 2."""
    from funnels import cli
    from funnels.analytics.funnel import run_funnel
    from tests.analytics.conftest import at, ev, funnel_query, load, step, users
    from tests.analytics.test_aggregate_by import organizations
    from tests.analytics.test_aggregate_by_cluster import pretend_cluster

    org, _ = organizations(services, {"acme": []}, {"c1": [], "c2": []}, [("acme", "c1"), ("acme", "c2")])
    load(services.events, [ev("c1", at(0, 0), "page"), ev("c2", at(0, 1000), "track", "connect")])
    pretend_cluster(services.events, monkeypatch)
    cli._load_groups(services, org, (org,))
    query = funnel_query([step("event", "page"), step("track", "connect")], aggregate_by=org)
    assert users(run_funnel(services.events, query)) == [1, 1]  # acme, through c1 and c2
    with pytest.raises(typer.Exit) as refused:
        cli._load_groups(services, "team", (org,))
    assert refused.value.exit_code == 2


def test_query_aggregate_by_breaks_organizations_down_by_their_own_property(
    demo_dir: tuple[Path, dict[str, str]],
) -> None:
    """--aggregate-by organization --breakdown person.<key>: each of the demo's organizations by its own
    identify's value (`domain`: one each), not its customers' (they have a `plan`, the organizations none)."""
    from funnels.demo_automation import ORGANIZATIONS

    data_dir, _ = demo_dir
    steps = json.dumps(
        [{"type": "track", "event": name, "name": name} for name in ("sign_up", "invite_sent")]
    )
    query = ["query", "--data-dir", str(data_dir), "--date-from", "2020-01-01", "--date-to", "2035-12-31"]
    query += ["--steps", steps, "--aggregate-by", "organization", "--config", str(data_dir / "funnels.yaml")]
    entered = {}
    for key in ("domain", "plan"):
        result = run(*query, "--breakdown", f"person.{key}", "--format", "json")
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)["data"]
        entered[key] = {row["breakdown"]: row["users"] for row in rows if row["step"] == 1}
    assert entered["domain"] == {domain: 1 for _, _, domain in ORGANIZATIONS}
    assert entered["plan"] == {"(none)": len(ORGANIZATIONS)}
    table = run(*query, "--breakdown", "person.domain")
    assert table.returncode == 0 and "acme.test" in table.stdout, table.stderr
