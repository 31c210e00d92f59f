"""The automation's process-level behaviour: refusing an invalid config, SIGHUP reload, `funnels worker`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from funnels.automation.deliveries import list_jobs
from funnels.automation.engine import Signal
from funnels.automation.identity import Identify
from funnels.events import Event
from funnels.services import Services
from funnels.store.outbox import JobFilter
from tests.processes import BIN, client, create_key, free_port, start_server, wait_until
from tests.receivers import NETWORK, HttpReceiver, SmtpReceiver

pytestmark = pytest.mark.process  # a real server or CLI subprocess


def config_with(receiver: HttpReceiver, *step_events: str) -> dict[str, Any]:
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "funnels": [
            {
                "id": "f",
                "forModels": "customer",
                "steps": [
                    {
                        "event": event,
                        "actions": {"type": "webhook", "args": {"url": f"{receiver.url}/{event}"}},
                    }
                    for event in step_events
                ],
            }
        ],
    }


def test_serve_refuses_an_invalid_config_with_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "models: [{name: customer}]\nfunnels:\n  - {id: f, forModels: robot, steps: {event: ''}}\n"
    )
    result = subprocess.run(
        [
            str(BIN),
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "funnels[0].forModels: unknown model 'robot'" in result.stderr
    assert "funnels[0].steps.event: expected a non-empty string" in result.stderr
    assert "not starting" in result.stderr


def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_on_errors(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps(config_with(http_receiver, "sign_up")))
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "admin")
    port = free_port()
    server = start_server(data_dir, port, "--config", str(config))
    try:
        with client(port, key) as http:

            def steps() -> list[str]:
                body = http.get("/v0/config").json()
                return [step["event"] for step in body["funnels"][0]["steps"]]

            assert steps() == ["sign_up"]
            config.write_text(json.dumps(config_with(http_receiver, "sign_up", "activated")))
            server.send_signal(signal.SIGHUP)
            wait_until(lambda: steps() == ["sign_up", "activated"])

            config.write_text(json.dumps({"models": [], "funnels": []}))
            server.send_signal(signal.SIGHUP)
            errors = wait_until(lambda: http.get("/v0/config").json()["errors"])
            assert any(error.startswith("models:") for error in errors)
            assert steps() == ["sign_up", "activated"]  # the old config stays in effect

            http.post("/api/v1/identify", json={"model": "customer", "ids": ["c1"]})
            result = http.post("/api/v1/events", json={"name": "sign_up", "ids": ["c1"]}).json()
            assert result["results"][0]["satisfied"] == [{"funnel": "f", "step": 1, "event": "sign_up"}]
            assert http_receiver.wait_for(1)[0].path == "/sign_up"  # the in-process worker delivered it
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def test_funnels_worker_delivers_from_the_outbox_of_a_stopped_server(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps(config_with(http_receiver, "sign_up")))
    data_dir = tmp_path / "data"
    svc = Services.open(data_dir, config_path=config)
    try:
        now = svc.clock.now_ms()
        event = Event(event_id="e1", type="track", event="sign_up", user_key="c1", ts_ms=now, received_ms=now)
        identify = Event(
            event_id="i1", type="identify", event="identify", user_key="c1", ts_ms=now, received_ms=now
        )
        svc.ingest(
            [
                Signal(
                    identify,
                    model="customer",
                    ids=("c1",),
                    identify=Identify("customer", ("c1",)),
                    explicit=True,
                ),
                Signal(event, ids=("c1",), explicit=True),
            ]
        )
    finally:
        svc.close()  # nothing was delivered: the app (and its worker) never ran
    assert http_receiver.requests == []

    with (tmp_path / "worker.log").open("wb") as sink:
        worker = subprocess.Popen(
            [str(BIN), "worker", "--config", str(config), "--data-dir", str(data_dir)],
            stdout=sink,
            stderr=sink,
        )
    try:
        (request,) = http_receiver.wait_for(1, timeout=20)
        assert request.path == "/sign_up" and request.headers["idempotency-key"].startswith("fnl_")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    svc = Services.open(data_dir, config_path=config)
    try:
        with svc.state.read() as connection:
            jobs = list_jobs(connection, JobFilter(), 1, 10)["data"]
    finally:
        svc.close()
    assert [(job["status"], job["attempts"]) for job in jobs] == [("sent", 1)]


def sign_up_in_outbox(data_dir: Path, config: Path, name: str) -> None:
    """An identified customer's `sign_up`, ingested without delivering anything."""
    svc = Services.open(data_dir, config_path=config)
    try:
        now = svc.clock.now_ms()
        identify = Event(
            event_id=f"i-{name}", type="identify", event="identify", user_key=name, ts_ms=now, received_ms=now
        )
        event = Event(
            event_id=f"e-{name}", type="track", event="sign_up", user_key=name, ts_ms=now, received_ms=now
        )
        who = Identify("customer", (name,), properties={"email": f"{name}@example.com"})
        svc.ingest(
            [
                Signal(identify, model="customer", ids=(name,), identify=who, explicit=True),
                Signal(event, ids=(name,), explicit=True),
            ]
        )
    finally:
        svc.close()


def test_funnels_worker_builds_unsubscribe_links_on_its_public_url_and_warns_without_one(
    tmp_path: Path, smtp_receiver: SmtpReceiver
) -> None:
    config = tmp_path / "funnels.json"
    action = {
        "type": "email",
        "args": {"to": "{{ modelProperties.email }}", "subject": "Hi", "text": "[{{ unsubscribe_url }}]"},
    }
    config.write_text(
        json.dumps(
            {
                "models": [{"name": "customer"}],
                "network": NETWORK,
                "email": {
                    "host": smtp_receiver.host,
                    "port": smtp_receiver.port,
                    "from": "team@funnels.test",
                },
                "funnels": [
                    {"id": "f", "forModels": "customer", "steps": {"event": "sign_up", "actions": action}}
                ],
            }
        )
    )
    data_dir = tmp_path / "data"
    env = {key: value for key, value in os.environ.items() if key != "FUNNELS_PUBLIC_URL"}
    logs: list[str] = []
    runs = (
        (1, "ann", None, False),
        (2, "bob", "https://funnels.test/base/", False),
        (3, "cy", "https://env.funnels.test", True),  # FUNNELS_PUBLIC_URL instead of --public-url
    )
    for count, name, public, from_env in runs:
        sign_up_in_outbox(data_dir, config, name)
        extra = ["--public-url", public] if public and not from_env else []
        log = tmp_path / f"worker-{name}.log"
        with log.open("wb") as sink:
            worker = subprocess.Popen(
                [str(BIN), "worker", "--config", str(config), "--data-dir", str(data_dir), *extra],
                stdout=sink,
                stderr=sink,
                env={**env, "FUNNELS_PUBLIC_URL": public} if from_env and public else env,
            )
        try:
            smtp_receiver.wait_for(count)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
        logs.append(log.read_text())
    without, with_url, with_env = (mail.message for mail in smtp_receiver.messages)
    assert "warning: no --public-url" in logs[0] and "warning" not in logs[1] and "warning" not in logs[2]
    assert re.fullmatch(
        r"<https://env\.funnels\.test/u/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+>", with_env["List-Unsubscribe"]
    )
    assert without["List-Unsubscribe"] is None and without.get_content().strip() == "[]"
    link = re.fullmatch(
        r"\[(https://funnels\.test/base/u/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)\]", with_url.get_content().strip()
    )
    assert link is not None, with_url.get_content()
    assert with_url["List-Unsubscribe"] == f"<{link.group(1)}>"
    assert with_url["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    bad = subprocess.run(
        [str(BIN), "worker", "--config", str(config), "--data-dir", str(data_dir), "--public-url", "ftp://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "--public-url 'ftp://x' must be an http:// or https:// URL" in bad.stderr


def test_funnels_serve_warns_when_its_emails_would_go_without_an_unsubscribe_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUNNELS_PUBLIC_URL", raising=False)  # the server inherits the environment
    config = tmp_path / "funnels.json"
    email = {"type": "email", "args": {"to": "a@example.com", "subject": "Hi", "text": "Hi"}}
    receipt = {**email, "transactional": True}
    document = {
        "models": [{"name": "customer"}],
        "funnels": [{"id": "f", "forModels": "customer", "steps": {"event": "sign_up", "actions": email}}],
    }
    for actions, public, warned in (
        (email, None, True),
        (receipt, None, False),
        (email, "https://f.test", False),
    ):
        document["funnels"][0]["steps"]["actions"] = actions  # type: ignore[index]
        config.write_text(json.dumps(document))
        data_dir = tmp_path / f"data-{len(list(tmp_path.iterdir()))}"
        log = data_dir.parent / "server.log"
        log.write_bytes(b"")
        extra = ["--public-url", public] if public else []
        server = start_server(data_dir, free_port(), "--config", str(config), *extra)
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        text = log.read_text()
        assert ("warning: no --public-url (FUNNELS_PUBLIC_URL)" in text) is warned, (actions, public, text)
        assert text.count("warning: no --public-url") <= 1  # said once, not again by the delivery process
