"""The automation half of `funnels demo`: a config (the spec's onboarding example), a local sink its webhook
and Slack actions post to, and a few dozen customers of a few organizations who moved through the funnel
over the last days, so the People and Deliveries pages have something to show in every status.

Nothing reaches the internet:

- webhook and Slack actions post to `DemoSink`, an HTTP server on 127.0.0.1 that this module runs while it
  seeds (and `funnels demo` runs again, on the same port, while it serves). It answers 200, except under
  `/crm/legacy`, which it refuses with 410 Gone: those jobs end `dead` (a 4xx is not retried).
- email actions go to an SMTP port on 127.0.0.1 where nothing listens: each attempt fails with a refused
  connection and is retried later (`failed`), until the attempts run out (`dead`).

The events go through the real ingest path (`Services.ingest` with the `/api/v1/identify` and
`/api/v1/events` bodies) and the actions through the real worker, on a `ManualClock` moved along the
events' times, so delays, `unless` cancellations, attempts and backoffs happen as they would have. Every
choice comes from a fixed seed: the same day gives the same customers, events and deliveries.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from funnels.automation.inputs import EventBody, IdentifyBody
from funnels.automation.people import find, set_subscribed
from funnels.automation.worker import Worker
from funnels.clock import ManualClock
from funnels.examples import onboarding_funnel
from funnels.services import Services

SEED = 20260402
CUSTOMERS = 36
DAYS = 8
# Customers who unsubscribe (through the API, as a support agent would for them) a day after signing up, and
# from what: the first two from the onboarding emails before their reminder is due (it ends `suppressed`),
# cus_1002 from a topic of emails the demo never sends (People shows it, with "Subscribe again").
OPT_OUTS = {"cus_1018": "email", "cus_1034": "email:onboarding", "cus_1002": "email:newsletter"}
OPT_OUT_AFTER_MS = 86_400_000

_FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Margaret",
    "Barbara",
    "Dennis",
    "Frances",
    "Ken",
    "Radia",
    "Edsger",
    "Hedy",
    "John",
    "Joan",
    "Tim",
    "Sophie",
    "Niklaus",
    "Adele",
    "Guido",
]
_LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Liskov",
    "Ritchie",
    "Allen",
    "Thompson",
    "Perlman",
    "Dijkstra",
    "Lamarr",
    "Backus",
    "Clarke",
    "Berners-Lee",
    "Wilson",
    "Wirth",
    "Goldberg",
    "van Rossum",
]
_TIMEZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Europe/London",
    "Asia/Singapore",
    "America/Sao_Paulo",
    "America/Los_Angeles",
]
_PLANS = ["free", "free", "team", "team", "enterprise", "legacy"]
ORGANIZATIONS = [
    ("org-acme", "Acme Rockets", "acme.test"),
    ("org-globex", "Globex", "globex.test"),
    ("org-initech", "Initech", "initech.test"),
    ("org-umbrella", "Umbrella Labs", "umbrella.test"),
    ("org-hooli", "Hooli", "hooli.test"),
]


def demo_config(sink_url: str, smtp_port: int) -> dict[str, Any]:
    """The demo's automation config: the spec's onboarding funnel, delivering only to 127.0.0.1, with two
    more actions at its second step (`development_api_call`) so that Deliveries shows every status and a
    lift: a Slack message to the growth channel, at most one a day about the same customer (`limits`: the
    later one ends `capped`), and an in-app nudge towards production with a 30% holdout measured on
    `production_api_call` within 2 days (`GET /v0/lift`)."""
    onboarding = onboarding_funnel(
        slack={
            "url": f"{sink_url}/slack/growth",
            "content": "{{ displayName }} signed up ({{ modelProperties.plan }})",
        },
        reminder={
            "to": "{{ modelProperties.email }}",
            "subject": "Need a hand getting started?",
            "text": "Hi {{ displayName }}, your first API call is one curl away.",
        },
        converted={
            "type": "webhook",
            "args": {
                "url": sink_url + "/crm/{{ modelProperties.plan }}/converted",
                "body": {"id": "{{ ids[0] }}", "name": "{{ displayName }}"},
            },
        },
    )
    onboarding["steps"][1]["actions"] = [
        {
            "type": "slack",
            "args": {"url": f"{sink_url}/slack/growth", "content": "{{ displayName }} made a first API call"},
        },
        {
            "type": "webhook",
            "holdout": "30%",
            "goal": {"event": "production_api_call", "within": "2d"},
            "args": {
                "url": f"{sink_url}/in-app/go-live",
                "body": {"id": "{{ ids[0] }}", "message": "Ready for production? Here is the checklist."},
            },
        },
    ]
    return {
        "models": [{"name": "customer"}, {"name": "organization"}],
        "segment": {"model": "customer"},
        "funnels": [
            onboarding,
            {
                "id": "org_activation",
                "forModels": "organization",
                "steps": [{"event": "$identify"}, {"event": "invite_sent"}, {"event": "second_seat"}],
            },
        ],
        "limits": [{"channel": "slack", "max": 1, "per": "1d"}],
        "delivery": {"maxAttempts": 4, "timeout": "5s", "backoffBase": "2h", "backoffMax": "12h"},
        # Deliveries reach only public addresses unless allowed here: the demo's sink is on loopback.
        "network": {"allow": ["127.0.0.1/32"]},
        "email": {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "from": "Acme <hello@acme.test>",
        },
    }


class _SinkHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        refused = self.path.startswith("/crm/legacy")
        body = b'{"error": "this CRM integration was switched off"}' if refused else b'{"ok": true}'
        self.send_response(410 if refused else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DemoSink:
    """The demo's webhook and Slack receiver on 127.0.0.1 (200, or 410 under /crm/legacy), in a thread."""

    def __init__(self, port: int = 0) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _SinkHandler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="funnels-demo-sink", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running_sink(port: int = 0) -> Iterator[DemoSink]:
    sink = DemoSink(port)
    try:
        yield sink
    finally:
        sink.close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound for a moment, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Step:
    at_ms: int
    body: IdentifyBody | EventBody


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def demo_story(now_ms: int, customers: int = CUSTOMERS, seed: int = SEED) -> list[Step]:
    """Organizations, then customers signing up over the last `DAYS` days, some calling the API."""
    rnd = random.Random(seed)
    day = 86_400_000
    start = now_ms - DAYS * day
    steps: list[Step] = []

    def add(at: int, kind: type[IdentifyBody] | type[EventBody], body: dict[str, Any]) -> None:
        if at <= now_ms:
            steps.append(Step(at, kind.model_validate({**body, "timestamp": _iso(at)})))

    for index, (org_id, name, domain) in enumerate(ORGANIZATIONS):
        at = start - day + index * 3_600_000
        add(
            at,
            IdentifyBody,
            {
                "model": "organization",
                "ids": [org_id, domain],
                "displayName": name,
                "properties": {"domain": domain, "seats": rnd.randint(3, 40)},
            },
        )
        if rnd.random() < 0.7:
            add(at + rnd.randint(1, 4) * day, EventBody, {"name": "invite_sent", "ids": [org_id]})
    names = [(first, last) for first in _FIRST for last in _LAST]
    rnd.shuffle(names)
    for index in range(customers):
        first, last = names[index]
        org_id, _org, domain = ORGANIZATIONS[index % len(ORGANIZATIONS)]
        customer_id = f"cus_{1001 + index}"
        email = f"{first.lower()}.{last.lower().replace(' ', '').replace('-', '')}@{domain}"
        plan = "legacy" if index % 9 == 4 else rnd.choice(_PLANS[:-1])
        signed_up = start + int(rnd.random() * (DAYS * day - 2 * 3_600_000))
        add(
            signed_up - 60_000,
            IdentifyBody,
            {
                "model": "customer",
                "ids": [customer_id, email],
                "displayName": f"{first} {last}",
                "properties": {
                    "name": f"{first} {last}",
                    "email": email,
                    "plan": plan,
                    "timezone": rnd.choice(_TIMEZONES),
                    "company": _org,
                    "seats": rnd.randint(1, 12),
                },
                "parentModel": "organization",
                "parentIds": [org_id],
            },
        )
        add(
            signed_up,
            EventBody,
            {
                "name": "sign_up",
                "ids": [customer_id],
                "properties": {"source": rnd.choice(["google", "docs", "twitter", "referral"])},
            },
        )
        roll = rnd.random()
        if roll < 0.6 or plan == "legacy":
            dev = signed_up + rnd.randint(600_000, 4 * day)
            add(
                dev,
                EventBody,
                {
                    "name": "development_api_call",
                    "ids": [email],
                    "properties": {"endpoint": rnd.choice(["/v1/charges", "/v1/customers"])},
                },
            )
            if rnd.random() < 0.55 or plan == "legacy":
                add(
                    dev + rnd.randint(3_600_000, 2 * day),
                    EventBody,
                    {"name": "production_api_call", "ids": [customer_id], "properties": {"region": "eu"}},
                )
    steps.sort(key=lambda step: step.at_ms)
    return steps


def _opt_out(svc: Services, customer_id: str, at_ms: int) -> None:
    with svc.state.write() as connection:
        found = find(connection, svc.events, "customer", customer_id)
        if found is not None:
            set_subscribed(connection, found.id, OPT_OUTS[customer_id], False, at_ms)


def write_config(path: Path, sink_port: int, smtp_port: int) -> Path:
    config = demo_config(f"http://127.0.0.1:{sink_port}", smtp_port)
    header = (
        "# funnels demo: the onboarding example. Webhook and Slack actions post to the demo's sink on\n"
        "# 127.0.0.1 (410 under /crm/legacy); email goes to a closed SMTP port, so it fails and retries.\n"
        "# The in-app nudge at development_api_call has a 30% holdout (Deliveries' lift card, GET /v0/lift);\n"
        "# Slack messages about one customer are capped at one a day (limits).\n"
    )
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def seed_automation(data_dir: Path, now: datetime, sink_port: int = 0) -> tuple[Path, int]:
    """Write `data_dir/funnels.yaml` and play the demo's customers through it; returns the config path and
    the sink's port (to run it again while serving)."""
    now_ms = int(now.timestamp() * 1000)
    data_dir.mkdir(parents=True, exist_ok=True)
    with running_sink(sink_port) as sink:
        config_path = write_config(data_dir / "funnels.yaml", sink.port, closed_port())
        clock = ManualClock(now_ms - (DAYS + 2) * 86_400_000)
        svc = Services.open(data_dir, clock=clock, config_path=config_path)
        worker = Worker(
            svc.state,
            svc.automation.delivery,
            clock,
            rng=random.Random(SEED),
            allow=svc.automation.network_allow,
        )
        try:
            story = demo_story(now_ms)
            opt_outs = sorted(
                (step.at_ms + OPT_OUT_AFTER_MS, step.body.ids[0])
                for step in story
                if isinstance(step.body, EventBody)
                and step.body.name == "sign_up"
                and step.body.ids[0] in OPT_OUTS
            )
            for step in story:
                while opt_outs and opt_outs[0][0] <= step.at_ms:
                    at_ms, customer_id = opt_outs.pop(0)
                    clock.set(at_ms)
                    worker.run_until_idle()
                    _opt_out(svc, customer_id, at_ms)
                clock.set(step.at_ms)
                worker.run_until_idle()  # what fell due before this event, delivered "then"
                svc.ingest([step.body.signal(step.at_ms)])
                worker.run_until_idle()
            for at_ms, customer_id in opt_outs:
                if at_ms <= now_ms:
                    clock.set(at_ms)
                    worker.run_until_idle()
                    _opt_out(svc, customer_id, at_ms)
            clock.set(now_ms)
            worker.run_until_idle()
            while svc.shipper.ship_once():  # the events into the analytics store too
                pass
        finally:
            worker.http.close()
            svc.close()
    return config_path, sink.port
