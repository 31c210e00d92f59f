"""The email channel against a real SMTP server (aiosmtpd): message shape, Message-ID, refusals, settings."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from funnels.channels.base import resolve_settings
from funnels.channels.email import CHANNEL, EmailArgs, EmailSettings, deliver_email, message_id
from tests.receivers import SmtpReceiver, delivery_request, free_port, local_http


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with local_http() as client:  # unused by email; part of every DeliveryRequest
        yield client


def smtp_settings(receiver: SmtpReceiver | None, **section: object) -> EmailSettings:
    base: dict[str, object] = {"security": "none", "from": "Acme <hello@acme.test>"}
    if receiver is not None:
        base |= {"host": receiver.host, "port": receiver.port}
    resolved = resolve_settings(CHANNEL, base | section, {})
    assert isinstance(resolved, EmailSettings)
    return resolved


def args(**fields: object) -> EmailArgs:
    return EmailArgs.model_validate({"to": "ada@example.test", "subject": "Need a hand?"} | fields)


def test_a_text_message(smtp_receiver: SmtpReceiver, http: httpx.Client) -> None:
    result = deliver_email(
        args(text="Hi Ada"), smtp_settings(smtp_receiver), delivery_request(http, key="job-1")
    )
    assert result.ok and not result.retryable
    (mail,) = smtp_receiver.wait_for(1)
    assert mail.mail_from == "hello@acme.test" and mail.rcpt_tos == ["ada@example.test"]
    message = mail.message
    assert message["From"] == "Acme <hello@acme.test>" and message["To"] == "ada@example.test"
    assert message["Subject"] == "Need a hand?" and message["Message-ID"] == message_id("job-1")
    assert message["Date"].datetime == datetime(2026, 4, 1, tzinfo=UTC)  # from the request's clock
    assert message.get_content_type() == "text/plain" and message.get_content().strip() == "Hi Ada"
    assert result.sent["messageId"] == message_id("job-1") and result.sent["to"] == ["ada@example.test"]


def test_an_html_message(smtp_receiver: SmtpReceiver, http: httpx.Client) -> None:
    assert deliver_email(args(html="<p>Hi</p>"), smtp_settings(smtp_receiver), delivery_request(http)).ok
    message = smtp_receiver.wait_for(1)[0].message
    assert message.get_content_type() == "text/html" and message.get_content().strip() == "<p>Hi</p>"


def test_text_and_html_make_a_multipart_alternative(smtp_receiver: SmtpReceiver, http: httpx.Client) -> None:
    result = deliver_email(
        args(text="Hi", html="<p>Hi</p>"), smtp_settings(smtp_receiver), delivery_request(http)
    )
    assert result.ok
    message = smtp_receiver.wait_for(1)[0].message
    assert message.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content().strip() for part in message.iter_parts()}
    assert parts == {"text/plain": "Hi", "text/html": "<p>Hi</p>"}


def test_the_message_id_is_stable_per_idempotency_key(
    smtp_receiver: SmtpReceiver, http: httpx.Client
) -> None:
    settings = smtp_settings(smtp_receiver)
    for key in ("job-1", "job-1", "job-2"):
        assert deliver_email(args(text="x"), settings, delivery_request(http, key=key)).ok
    ids = [mail.message["Message-ID"] for mail in smtp_receiver.wait_for(3)]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].startswith("<") and ids[0].endswith("@funnels>") and len(ids[0]) == len("<@funnels>") + 32


def test_a_list_of_recipients_and_the_args_sender(smtp_receiver: SmtpReceiver, http: httpx.Client) -> None:
    to = ["ada@example.test", "grace@example.test"]
    result = deliver_email(
        args(to=to, text="x", **{"from": "ops@acme.test"}),
        smtp_settings(smtp_receiver),
        delivery_request(http),
    )
    assert result.ok
    mail = smtp_receiver.wait_for(1)[0]
    assert mail.rcpt_tos == to and mail.mail_from == "ops@acme.test"
    assert mail.message["To"] == "ada@example.test, grace@example.test"


def test_login_when_a_username_is_set_and_the_password_is_never_logged(http: httpx.Client) -> None:
    with SmtpReceiver(credentials=("mailer", "hunter2")) as receiver:
        good = smtp_settings(receiver, username="mailer", password="hunter2")
        result = deliver_email(args(text="x"), good, delivery_request(http))
        assert result.ok and receiver.wait_for(1)[0].authenticated
        assert "hunter2" not in json.dumps(result.sent) and result.sent["username"] == "mailer"
        wrong = deliver_email(
            args(text="x"),
            smtp_settings(receiver, username="mailer", password="nope"),
            delivery_request(http),
        )
        assert not wrong.ok and not wrong.retryable and wrong.status_code == 535
        assert len(receiver.messages) == 1


@pytest.mark.parametrize(
    ("where", "reply", "retryable"),
    [
        ("rcpt", "550 5.1.1 no such user", False),
        ("rcpt", "450 4.2.1 mailbox busy, try later", True),
        ("data", "554 5.7.1 rejected as spam", False),
        ("data", "451 4.3.0 temporary failure", True),
    ],
)
def test_a_refusing_server(
    smtp_receiver: SmtpReceiver, http: httpx.Client, where: str, reply: str, retryable: bool
) -> None:
    if where == "rcpt":
        smtp_receiver.refuse_all_rcpt = reply
    else:
        smtp_receiver.refuse_data = reply
    result = deliver_email(args(text="x"), smtp_settings(smtp_receiver), delivery_request(http))
    assert not result.ok and result.retryable is retryable
    assert result.error is not None and reply.split()[0] in result.error and reply.split()[-1] in result.error
    assert smtp_receiver.messages == []


def test_a_partly_refused_message_counts_as_delivered(
    smtp_receiver: SmtpReceiver, http: httpx.Client
) -> None:
    smtp_receiver.refuse_rcpt["gone@example.test"] = "550 5.1.1 no such user"
    result = deliver_email(
        args(to=["ada@example.test", "gone@example.test"], text="x"),
        smtp_settings(smtp_receiver),
        delivery_request(http),
    )
    assert result.ok  # retrying would send Ada a second copy
    assert result.response is not None and "gone@example.test: 550" in result.response
    assert smtp_receiver.wait_for(1)[0].rcpt_tos == ["ada@example.test"]


def test_a_closed_port_is_retryable(http: httpx.Client) -> None:
    settings = smtp_settings(None, host="127.0.0.1", port=free_port())
    result = deliver_email(args(text="x"), settings, delivery_request(http, timeout_s=1))
    assert not result.ok and result.retryable and result.error
    assert not result.maybe_delivered  # nothing went out


class HangUpAfterData(socketserver.StreamRequestHandler):
    """An SMTP peer that takes the whole message, then closes the connection instead of replying."""

    def handle(self) -> None:
        self.wfile.write(b"220 hang-up ESMTP\r\n")
        in_data = False
        for line in self.rfile:
            if in_data:
                if line == b".\r\n":
                    return  # the message is here; the reply never comes
                continue
            verb = line[:4].upper()
            reply = {b"EHLO": b"250 hang-up", b"HELO": b"250 hang-up", b"DATA": b"354 go on"}.get(
                verb, b"250 ok"
            )
            in_data = verb == b"DATA"
            self.wfile.write(reply + b"\r\n")


def test_a_connection_lost_after_the_message_went_out_may_have_delivered_it(http: httpx.Client) -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), HangUpAfterData) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            settings = smtp_settings(None, host="127.0.0.1", port=server.server_address[1], security="none")
            result = deliver_email(args(text="x"), settings, delivery_request(http, timeout_s=2))
        finally:
            server.shutdown()
    assert not result.ok and result.retryable
    assert result.maybe_delivered  # an at-most-once job ends `unknown` instead of a retry


def test_starttls_that_the_server_does_not_offer_is_not_retried(
    smtp_receiver: SmtpReceiver, http: httpx.Client
) -> None:
    result = deliver_email(
        args(text="x"), smtp_settings(smtp_receiver, security="starttls"), delivery_request(http)
    )
    assert not result.ok and not result.retryable and result.error is not None and "STARTTLS" in result.error
    assert smtp_receiver.messages == []


def test_missing_host_or_sender(http: httpx.Client) -> None:
    no_host = deliver_email(args(text="x"), smtp_settings(None), delivery_request(http))
    assert not no_host.ok and not no_host.retryable
    assert no_host.error == "email is not configured: set email.host or FUNNELS_SMTP_HOST"
    no_sender = resolve_settings(CHANNEL, {"host": "127.0.0.1"}, {})
    result = deliver_email(args(text="x"), no_sender, delivery_request(http))  # type: ignore[arg-type]
    assert not result.ok and not result.retryable and result.error is not None and "args.from" in result.error


def test_a_line_break_in_a_rendered_subject_is_refused_not_injected(
    smtp_receiver: SmtpReceiver, http: httpx.Client
) -> None:
    result = deliver_email(
        args(subject="Hi\r\nBcc: victim@example.test", text="x"),
        smtp_settings(smtp_receiver),
        delivery_request(http),
    )
    assert not result.ok and not result.retryable and result.error is not None
    assert result.error.startswith("cannot build the message")
    assert smtp_receiver.messages == []


@pytest.mark.parametrize(
    ("section", "environ", "port", "security"),
    [
        ({}, {}, 587, "starttls"),
        ({"port": 465}, {}, 465, "ssl"),
        ({"port": 25}, {}, 25, "none"),
        ({"port": 465, "security": "starttls"}, {}, 465, "starttls"),
        ({}, {"FUNNELS_SMTP_PORT": "465"}, 465, "ssl"),
        ({"port": 2525}, {"FUNNELS_SMTP_PORT": "465", "FUNNELS_SMTP_SECURITY": "ssl"}, 2525, "ssl"),
    ],
)
def test_security_defaults_by_port_and_the_file_wins_over_the_environment(
    section: dict[str, object], environ: dict[str, str], port: int, security: str
) -> None:
    settings = resolve_settings(CHANNEL, section, environ)
    assert isinstance(settings, EmailSettings) and (settings.port, settings.security) == (port, security)


def test_every_setting_has_its_environment_variable() -> None:
    environ = {
        "FUNNELS_SMTP_HOST": "smtp.example.test",
        "FUNNELS_SMTP_PORT": "2525",
        "FUNNELS_SMTP_USERNAME": "mailer",
        "FUNNELS_SMTP_PASSWORD": "hunter2",
        "FUNNELS_SMTP_SECURITY": "none",
        "FUNNELS_SMTP_FROM": "hello@acme.test",
    }
    settings = resolve_settings(CHANNEL, {"host": "smtp.file.test"}, environ)
    assert isinstance(settings, EmailSettings)
    assert (settings.host, settings.port, settings.username, settings.security, settings.from_) == (
        "smtp.file.test",
        2525,
        "mailer",
        "none",
        "hello@acme.test",
    )
    assert settings.password is not None and settings.password.get_secret_value() == "hunter2"


@pytest.mark.parametrize(
    "to",
    [
        "victim@example.test, attacker@evil.example",  # a model property rendered into `to`
        ["ada@example.test", "victim@example.test, attacker@evil.example"],
        "victim@example.test; attacker@evil.example",
        "friends: victim@example.test, attacker@evil.example;",  # a group
        "<victim@example.test> attacker@evil.example",
        "victim@example.test\r\nRCPT TO:<attacker@evil.example>",
        "not-an-address",
    ],
)
def test_a_recipient_must_be_exactly_one_address(
    smtp_receiver: SmtpReceiver, http: httpx.Client, to: str | list[str]
) -> None:
    result = deliver_email(args(to=to, text="x"), smtp_settings(smtp_receiver), delivery_request(http))
    assert not result.ok and not result.retryable
    assert result.error is not None and result.error.startswith("invalid address: to: ")
    # The server saw no RCPT TO for this message: the next, valid one is the first it gets.
    assert deliver_email(args(text="y"), smtp_settings(smtp_receiver), delivery_request(http)).ok
    (mail,) = smtp_receiver.wait_for(1)
    assert mail.rcpt_tos == ["ada@example.test"] and mail.message.get_content().strip() == "y"


def test_the_sender_must_be_exactly_one_address_too(smtp_receiver: SmtpReceiver, http: httpx.Client) -> None:
    hostile = args(text="x", **{"from": "ops@acme.test, attacker@evil.example"})
    result = deliver_email(hostile, smtp_settings(smtp_receiver), delivery_request(http))
    assert not result.ok and not result.retryable
    assert result.error is not None and result.error.startswith("invalid address: from: ")
    assert smtp_receiver.messages == []


def test_a_display_name_with_a_comma_is_still_one_recipient(
    smtp_receiver: SmtpReceiver, http: httpx.Client
) -> None:
    result = deliver_email(
        args(to='"Lovelace, Ada" <ada@example.test>', text="x"),
        smtp_settings(smtp_receiver),
        delivery_request(http),
    )
    assert result.ok
    mail = smtp_receiver.wait_for(1)[0]
    assert mail.rcpt_tos == ["ada@example.test"] and mail.message["To"].addresses[0].display_name == (
        "Lovelace, Ada"
    )
