"""`funnels demo`'s automation half: the config validates, and after seeding the delivery log has a job in
every status the dashboard shows, delivered only to 127.0.0.1, the same on every run."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.auth import create_key
from funnels.clock import ManualClock
from funnels.config import load_config
from funnels.demo_automation import CUSTOMERS, seed_automation
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
            for status in ("sent", "scheduled", "cancelled", "failed", "dead"):
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
    finally:
        svc.close()
    assert len([job for job in _jobs(data_dir) if job[1] == "slack"]) == CUSTOMERS

    again = tmp_path / "again"
    seed_automation(again, NOW)
    assert _jobs(again) == _jobs(data_dir)  # a fixed seed: the same story every time
