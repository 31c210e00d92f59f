"""`funnels demo`'s automation half: the config validates, and after seeding the delivery log has a job in
every status the dashboard shows (held out, capped and suppressed too), its holdout has a lift with numbers,
a customer has opted out, delivered only to 127.0.0.1, the same on every run."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.auth import create_key
from funnels.clock import ManualClock
from funnels.config import load_config
from funnels.demo_automation import CUSTOMERS, OPT_OUTS, seed_automation
from funnels.services import Services
from tests.conftest import bearer

NOW = datetime(2026, 4, 10, 15, 30, tzinfo=UTC)


def _jobs(data_dir: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(data_dir / "state.sqlite3") as connection:
        rows = connection.execute("SELECT key, action_type, status FROM action_jobs ORDER BY key").fetchall()
    return [tuple(row) for row in rows]


def test_the_demo_has_deliveries_in_every_status(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config_path, _sink_port = seed_automation(data_dir, NOW)
    config = load_config(config_path)
    assert list(config.models) == ["customer", "organization"]
    text = config_path.read_text()
    assert "127.0.0.1" in text and "https://" not in text  # nothing goes to the internet

    now_ms = int(NOW.timestamp() * 1000)
    svc = Services.open(data_dir, ManualClock(now_ms), config_path)
    try:
        key = create_key(svc.state, svc.clock, ["admin"])
        with TestClient(create_app(svc, run_worker=False)) as client:
            totals = {}
            for status in (
                "sent",
                "scheduled",
                "cancelled",
                "failed",
                "dead",
                "held_out",
                "capped",
                "suppressed",
            ):
                body = client.get("/v0/actions", params={"status": status}, headers=bearer(key)).json()
                totals[status] = body["total"]
            assert all(totals.values()), totals
            dead = client.get(
                "/v0/actions", params={"status": "dead", "size": 200}, headers=bearer(key)
            ).json()
            errors = {job["last_error"] for job in dead["data"]}
            assert any("410" in (error or "") for error in errors), errors  # the refusing CRM webhook
            person = client.get("/v0/models/customer/cus_1001", headers=bearer(key)).json()
            assert person["displayName"] and person["properties"]["email"] in person["ids"]
            assert person["parents"] and person["parents"][0]["model"] == "organization"
            assert person["timeline"]["items"]
            customers = client.get("/v0/actions", params={"status": "sent", "size": 200}, headers=bearer(key))
            assert len({job["funnel"] for job in customers.json()["data"]}) >= 1
            suppressed = client.get(
                "/v0/actions", params={"status": "suppressed"}, headers=bearer(key)
            ).json()
            assert {job["type"] for job in suppressed["data"]} == {"email"}
            capped = client.get("/v0/actions", params={"status": "capped"}, headers=bearer(key)).json()
            assert {job["type"] for job in capped["data"]} == {"slack"}  # `limits`: one a day per customer

            # The Deliveries page's lift card has numbers: both groups decided, an interval, a p-value.
            (lift,) = client.get("/v0/lift", headers=bearer(key)).json()["data"]
            assert (lift["step"], lift["action"], lift["holdout_percent"]) == (2, 2, 30.0)
            assert lift["goal"]["event"] == "production_api_call"
            assert lift["treated"]["jobs"] >= 10 and lift["holdout"]["jobs"] >= 5, lift
            assert lift["lift"]["absolute_ci"] is not None and lift["lift"]["p_value"] is not None
            summary = client.get("/v0/actions/summary", headers=bearer(key)).json()["data"]
            nudge = next(row for row in summary if (row["step"], row["action"]) == (2, 2))
            assert nudge["statuses"]["held_out"] == lift["holdout"]["jobs"] + lift["holdout"]["pending"]

            # People: the opted-out customers' subscriptions.
            for customer_id, topic in OPT_OUTS.items():
                person = client.get(f"/v0/models/customer/{customer_id}", headers=bearer(key)).json()
                assert [out["topic"] for out in person["unsubscribed"]] == [topic]
    finally:
        svc.close()
    with sqlite3.connect(data_dir / "state.sqlite3") as connection:
        (at_sign_up,) = connection.execute(
            "SELECT count(*) FROM action_jobs WHERE action_type = 'slack' AND step_index = 0"
        ).fetchone()
    assert at_sign_up == CUSTOMERS

    again = tmp_path / "again"
    seed_automation(again, NOW)
    assert _jobs(again) == _jobs(data_dir)  # a fixed seed: the same story every time
