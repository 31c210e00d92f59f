"""One-click unsubscribe (RFC 8058): emails that are not transactional carry `List-Unsubscribe` and
`List-Unsubscribe-Post` with a signed per-instance, per-topic link (a real SMTP server sees them); a real HTTP
client's POST to the link unsubscribes and a pending email of that topic then ends `suppressed`; a GET never
unsubscribes; a bad token is the app's plain 404, always the same; the endpoints are rate limited; and
`funnels suppressions import` writes opt-outs from a CSV file."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from funnels.api.ratelimit import RateLimiter
from funnels.app import create_app
from funnels.automation.consent import UnsubscribeTokens, read_suppressions
from funnels.clock import ManualClock
from funnels.store.state import StateStore
from tests.automation.conftest import Config, World
from tests.receivers import NETWORK, ReceivedMail, SmtpReceiver

HOUR_MS = 3_600_000
PUBLIC = "https://funnels.test"
MAILBOX = "unsubscribe@funnels.test"
BIN = Path(sys.executable).parent / "funnels"


def mail(subject: str, text: str = "Hi. Unsubscribe: {{ unsubscribe_url }}", **fields: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "args": {"to": "{{ modelProperties.email }}", "subject": subject, "text": text},
        **fields,
    }


@pytest.fixture
def automation_config(smtp_receiver: SmtpReceiver) -> Config:
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "email": {
            "host": smtp_receiver.host,
            "port": smtp_receiver.port,
            "security": "none",
            "from": "team@funnels.test",
            "unsubscribeMailto": MAILBOX,
        },
        "funnels": [
            {
                "id": "onboarding",
                "forModels": "customer",
                "steps": {
                    "event": "sign_up",
                    "actions": [
                        mail("Welcome"),  # topic: its funnel's id, onboarding
                        mail("Reminder", delay="1h"),  # the same topic, pending for an hour
                        mail("Tips", topic="tips", delay="1h"),
                        mail("Your receipt", text="Receipt[{{ unsubscribe_url }}]", transactional=True),
                    ],
                },
            }
        ],
    }


@pytest.fixture
def linked(world: World) -> World:
    """The world, its worker building links on `PUBLIC`."""
    world.svc.worker.public_url = PUBLIC
    return world


@pytest.fixture
def server(linked: World) -> Iterator[tuple[str, Any]]:
    """A real uvicorn server over the world's services (no lifespan: the world's app runs the services);
    its base URL and its app."""
    app = create_app(linked.svc, run_shipper=False, run_worker=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def sign_up(world: World, name: str) -> None:
    world.identify([name], properties={"email": f"{name}@example.com"})
    world.event("sign_up", [name])


def by_subject(messages: list[ReceivedMail]) -> dict[str, ReceivedMail]:
    return {str(message.message["Subject"]): message for message in messages}


def token_of(message: ReceivedMail) -> str:
    match = re.search(rf"<{re.escape(PUBLIC)}/u/([A-Za-z0-9_.-]+)>", str(message.message["List-Unsubscribe"]))
    assert match, message.message["List-Unsubscribe"]
    return match.group(1)


def body(message: ReceivedMail) -> str:
    part = message.message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).strip()


def outcomes(world: World, name: str) -> dict[int, str]:
    return {job["action"]: job["status"] for job in world.jobs(id=name)}


def test_a_real_smtp_server_sees_the_headers_on_a_non_transactional_email_only(
    linked: World, smtp_receiver: SmtpReceiver
) -> None:
    sign_up(linked, "ada")
    linked.run()
    mails = by_subject(smtp_receiver.wait_for(2))
    welcome, receipt = mails["Welcome"], mails["Your receipt"]
    token = token_of(welcome)
    url = f"{PUBLIC}/u/{token}"
    assert welcome.message["List-Unsubscribe"] == f"<{url}>, <mailto:{MAILBOX}?subject=unsubscribe%20{token}>"
    assert welcome.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body(welcome) == f"Hi. Unsubscribe: {url}"  # {{ unsubscribe_url }}
    assert receipt.message["List-Unsubscribe"] is None and receipt.message["List-Unsubscribe-Post"] is None
    assert body(receipt) == "Receipt[]"  # transactional: no link to render
    named = linked.svc.worker.tokens.read(token)
    assert named is not None and named[1] == "email:onboarding"
    sent = next(job for job in linked.jobs(id="ada") if job["action"] == 1)
    rendered = linked.job(sent["id"])["rendered"]
    assert rendered["text"] == f"Hi. Unsubscribe: {url}"  # admins see the link
    assert rendered["listUnsubscribe"] == welcome.message["List-Unsubscribe"]


def test_the_tips_email_carries_a_token_for_its_own_topic(linked: World, smtp_receiver: SmtpReceiver) -> None:
    sign_up(linked, "bo")
    linked.run(HOUR_MS)
    mails = by_subject(smtp_receiver.wait_for(4))
    tokens = {subject: token_of(mails[subject]) for subject in ("Welcome", "Reminder", "Tips")}
    read = {subject: linked.svc.worker.tokens.read(token) for subject, token in tokens.items()}
    assert read["Welcome"] == read["Reminder"] and read["Welcome"] is not None
    assert (
        read["Tips"] is not None and read["Tips"][1] == "email:tips" and read["Tips"][0] == read["Welcome"][0]
    )


def test_without_a_public_url_only_the_mailto_goes_and_the_url_renders_empty(
    world: World, smtp_receiver: SmtpReceiver
) -> None:
    sign_up(world, "cy")
    world.run()
    welcome = by_subject(smtp_receiver.wait_for(2))["Welcome"]
    header = str(welcome.message["List-Unsubscribe"])
    assert header.startswith(f"<mailto:{MAILBOX}?subject=unsubscribe%20") and "https" not in header
    assert welcome.message["List-Unsubscribe-Post"] is None  # RFC 8058 one-click needs the HTTPS link
    assert body(welcome) == "Hi. Unsubscribe:"


def test_a_real_one_click_post_unsubscribes_and_the_pending_email_ends_suppressed(
    linked: World, server: tuple[str, Any], smtp_receiver: SmtpReceiver
) -> None:
    base, _app = server
    sign_up(linked, "dee")
    linked.run()
    token = token_of(by_subject(smtp_receiver.wait_for(2))["Welcome"])
    with httpx.Client(base_url=base) as http:
        page = http.get(f"/u/{token}")  # a mail scanner, or the recipient's browser: changes nothing
        assert page.status_code == 200
        assert "Unsubscribe d•••@example.com from “onboarding” emails?" in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        assert linked.get("/v0/models/customer/dee")["unsubscribed"] == []
        one_click = http.post(
            f"/u/{token}",
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200
        assert "d•••@example.com is unsubscribed from “onboarding” emails." in one_click.text
        first = linked.get("/v0/models/customer/dee")["unsubscribed"]
        assert [(out["topic"], out["source"]) for out in first] == [("email:onboarding", "link")]
        linked.clock.advance(60_000)
        assert http.post(f"/u/{token}").status_code == 200  # again: a no-op that answers the same
        assert linked.get("/v0/models/customer/dee")["unsubscribed"] == first  # the first time is kept
        assert "is unsubscribed from" in http.get(f"/u/{token}").text  # the page says so now
    linked.run(HOUR_MS)
    assert outcomes(linked, "dee") == {1: "sent", 2: "suppressed", 3: "sent", 4: "sent"}
    subjects = sorted(str(m.message["Subject"]) for m in smtp_receiver.messages)
    assert subjects == ["Tips", "Welcome", "Your receipt"]  # no Reminder: the same topic as the link's


def test_the_pages_second_button_unsubscribes_from_all_email(
    linked: World, server: tuple[str, Any], smtp_receiver: SmtpReceiver
) -> None:
    base, _app = server
    sign_up(linked, "fay")
    linked.run()
    token = token_of(by_subject(smtp_receiver.wait_for(2))["Welcome"])
    with httpx.Client(base_url=base) as http:
        page = http.get(f"/u/{token}")
        assert 'name="scope" value="all"' in page.text and "Unsubscribe from all emails" in page.text
        done = http.post(f"/u/{token}", data={"scope": "all"})  # what the browser posts for that button
        assert done.status_code == 200 and "f•••@example.com is unsubscribed from all emails." in done.text
    outs = linked.get("/v0/models/customer/fay")["unsubscribed"]
    assert [(out["topic"], out["source"]) for out in outs] == [("email", "link")]
    linked.run(HOUR_MS)
    assert outcomes(linked, "fay") == {1: "sent", 2: "suppressed", 3: "suppressed", 4: "sent"}  # Tips too


def test_bad_tokens_get_the_same_plain_404_and_change_nothing(
    linked: World, server: tuple[str, Any], smtp_receiver: SmtpReceiver, tmp_path: Path
) -> None:
    base, _app = server
    sign_up(linked, "eve")
    linked.run()
    token = token_of(by_subject(smtp_receiver.wait_for(2))["Welcome"])
    payload, _, signature = token.partition(".")
    (instance_id, topic) = linked.svc.worker.tokens.read(token)  # type: ignore[misc]
    other_state = StateStore(tmp_path / "other.sqlite3")  # another server's secret signs the same names
    try:
        foreign = UnsubscribeTokens(other_state, ManualClock(0)).make(instance_id, topic)
    finally:
        other_state.close()
    forged_payload = linked.svc.worker.tokens.make(instance_id + 1, topic).partition(".")[0]
    bad = [
        f"{payload}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",  # one character of the MAC
        f"{forged_payload}.{signature}",  # another instance under this one's MAC
        f"{payload}.",
        payload,
        foreign,
        "x",
        "a" * 5000,
        "%C3%A9t%C3%A9.%00",
        linked.svc.worker.tokens.make(999_999, topic),  # signed, but no such instance
    ]
    with httpx.Client(base_url=base) as http:
        unknown = http.get("/u-no-such-page")
        assert unknown.status_code == 404
        for method in ("GET", "POST"):
            for candidate in bad:
                answer = http.request(method, f"/u/{candidate}")
                assert (answer.status_code, answer.text) == (404, unknown.text), (method, candidate)
    assert linked.get("/v0/models/customer/eve")["unsubscribed"] == []


def test_the_endpoints_are_rate_limited_per_client_address(linked: World, server: tuple[str, Any]) -> None:
    base, app = server
    app.state.unsubscribe_limiter = RateLimiter(5, 0.01)
    with httpx.Client(base_url=base) as http:
        answers = [http.request("POST" if i % 2 else "GET", "/u/nothing.here") for i in range(8)]
    assert [answer.status_code for answer in answers] == [404] * 5 + [429] * 3
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "TOO_MANY_REQUESTS"
    assert int(refused.headers["retry-after"]) >= 1


def test_a_token_bucket_refills_and_keeps_clients_apart() -> None:
    now = [0.0]
    limits = RateLimiter(2, 0.5, max_clients=2, clock=lambda: now[0])
    assert [limits.take("a"), limits.take("a")] == [None, None]
    assert limits.take("a") == pytest.approx(2.0)  # one token comes back every 2 s
    assert limits.take("b") is None  # another address has its own bucket
    now[0] = 2.0
    assert limits.take("a") is None and limits.take("a") is not None
    limits.take("c")  # a third client: the least recently seen (b) is forgotten, i.e. full again
    assert limits.take("b") is None and limits.take("b") is None


def test_the_secret_is_generated_once_and_shared(linked: World) -> None:
    first = linked.svc.worker.tokens.make(7, "email:onboarding")
    again = UnsubscribeTokens(linked.svc.state, linked.clock)  # another process over the same store
    assert again.make(7, "email:onboarding") == first
    assert again.read(first) == (7, "email:onboarding")
    assert again.make(7, "email:tips") != first and again.make(8, "email:onboarding") != first


# --- funnels suppressions import --------------------------------------------------------------------------


def run_import(world: World, state_url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--state-url", state_url] if state_url else ["--data-dir", str(world.svc.data_dir)]
    return subprocess.run(
        [str(BIN), "suppressions", "import", *args, *where], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def state_url(state_backend: str, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("postgres_url") if state_backend == "postgresql" else None  # type: ignore[no-any-return]


@pytest.mark.process
def test_suppressions_import_writes_good_rows_and_reports_bad_ones_by_line(
    world: World, tmp_path: Path, state_url: str | None
) -> None:
    for name in ("ann", "ben", "cat"):
        world.identify([name], properties={"email": f"{name.title()}@Example.com"})
    world.identify(["twin"], properties={"email": "ann@example.com"})  # two instances, one address
    file = tmp_path / "export.csv"
    file.write_bytes(
        "\ufeffEmail Address,external_id,Topic,first_name\n"  # Excel's BOM, a header in any case
        "ann@example.com,,,Ann\n"  # line 2: by address (both instances)
        ",ben,email:tips,Ben\n"  # line 3: by id, a topic
        "ANN@example.com,,,\n"  # line 4: already, from line 2
        "nobody@example.com,,,\n"  # line 5: no such instance
        "\n"
        "cat@example.com,,Email:Tips,\n"  # line 7: a bad topic
        "not-an-address,,,\n"  # line 8
        ",,sms,\n".encode()  # line 9: neither
    )
    dry = run_import(world, state_url, str(file), "--model", "customer", "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert dry.stdout.strip() == (
        "would import 2 rows (3 opt-outs); already unsubscribed 1; unknown instance 1; bad rows 3"
    )
    assert world.get("/v0/models/customer/ann")["unsubscribed"] == []  # a dry run writes nothing
    done = run_import(world, state_url, str(file), "--model", "customer")
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip() == (
        "imported 2 rows (3 opt-outs); already unsubscribed 1; unknown instance 1; bad rows 3"
    )
    assert done.stderr.splitlines() == [
        f"{file}:7: topic 'Email:Tips' is not email, sms, email:<topic> or sms:<topic>",
        f"{file}:8: email 'not-an-address' is not an address",
        f"{file}:9: no id and no email",
        f"{file}:5: no such instance",
    ]
    outs = {
        name: [
            (out["topic"], out["source"]) for out in world.get(f"/v0/models/customer/{name}")["unsubscribed"]
        ]
        for name in ("ann", "twin", "ben", "cat")
    }
    assert outs == {
        "ann": [("email", "import")],
        "twin": [("email", "import")],
        "ben": [("email:tips", "import")],
        "cat": [],
    }
    again = run_import(world, state_url, str(file), "--model", "customer")
    assert again.stdout.strip() == (
        "imported 0 rows (0 opt-outs); already unsubscribed 3; unknown instance 1; bad rows 3"
    )


@pytest.mark.process
def test_suppressions_import_refuses_an_unreadable_file_without_a_traceback(
    world: World, tmp_path: Path, state_url: str | None
) -> None:
    cases = {
        "latin1.csv": ("email\ncafé@example.com\n".encode("latin-1"), "not UTF-8 text"),
        "no-columns.csv": (b"name,phone\nAnn,123\n", "the header has no id column"),
        "empty.csv": (b"", "the file is empty"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        result = run_import(world, state_url, str(tmp_path / name), "--model", "customer")
        assert result.returncode == 2, (name, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
    missing = run_import(world, state_url, str(tmp_path / "missing.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr


def test_rows_without_a_model_are_bad_rows() -> None:
    rows, bad = read_suppressions(b"id,model\nc1,customer\nc2,\n", None, "email")
    assert [(row.line, row.model, row.id) for row in rows] == [(2, "customer", "c1")]
    assert bad == [(3, "no model: give --model or a model column")]
