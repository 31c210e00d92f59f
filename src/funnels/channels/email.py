"""`email`: a message over SMTP (server settings in the config's `email` section or the environment).

The `Message-ID` is derived from the idempotency key, so every attempt of one action sends the same id and
a receiving system (or a person) can tell a retry from a second message. SMTP's own reply classes decide
retries: 4xx is temporary, 5xx is permanent.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import formatdate
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from funnels.channels.base import Channel, DeliveryRequest, DeliveryResult, Text, excerpt, failure

Security = Literal["starttls", "ssl", "none"]
_SECURITY_BY_PORT: dict[str, Security] = {"587": "starttls", "465": "ssl"}


class EmailArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: Text | list[Text]
    subject: Text
    from_: str | None = Field(default=None, alias="from")
    text: str | None = None
    html: str | None = None

    @model_validator(mode="after")
    def _has_a_body(self) -> EmailArgs:
        if self.text is None and self.html is None:
            raise ValueError("needs `text` or `html`")
        return self


class EmailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    security: Security  # default by port: starttls on 587, ssl on 465, else none
    from_: str | None = Field(default=None, alias="from")
    # A mailbox for `List-Unsubscribe`'s mailto (beside the one-click HTTPS link): its messages' subject
    # carries the recipient's token. funnels does not read that mailbox.
    unsubscribe_mailto: str | None = Field(default=None, alias="unsubscribeMailto")

    @model_validator(mode="after")
    def _mailto_is_an_address(self) -> EmailSettings:
        if self.unsubscribe_mailto is not None:
            _mailbox(self.unsubscribe_mailto)
        return self

    @model_validator(mode="before")
    @classmethod
    def _security_from_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("security") is None:
            return {**data, "security": _SECURITY_BY_PORT.get(str(data.get("port", 587)).strip(), "none")}
        return data


def message_id(idempotency_key: str) -> str:
    """The same `Message-ID` for every attempt of one action job."""
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@funnels>"


class AddressInvalid(ValueError):
    """A rendered address field is not exactly one address."""


def one_address(value: str, field: str) -> Address:
    """`value` parsed by the standard library's RFC 5322 parser as exactly one address (`Ada <ada@x.test>`
    or `ada@x.test`); `AddressInvalid` for none, several (`a@x.test, b@y.test`), a group, a line break or
    anything the parser flags as a defect. A model property rendered into `to` is attacker-controlled:
    this is what keeps it from adding recipients."""
    if any(char in value for char in "\r\n\0"):
        raise AddressInvalid(f"{field}: {value!r} contains a line break")
    header = default_policy.header_factory(field, value)
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    groups: tuple[Any, ...] = getattr(header, "groups", ())
    if header.defects or len(groups) != 1 or groups[0].display_name is not None or len(addresses) != 1:
        count = f"{len(addresses)} addresses" if len(addresses) != 1 else "not a plain address"
        raise AddressInvalid(f"{field}: {value!r} is not exactly one email address ({count})")
    address: Address = addresses[0]
    if not address.username or not address.domain:
        raise AddressInvalid(f"{field}: {value!r} is not an email address (expected name@domain)")
    return address


def _mailbox(value: str) -> str:
    """`unsubscribeMailto`'s address (`name@domain`), or ValueError."""
    try:
        return one_address(value, "to").addr_spec
    except AddressInvalid as error:
        raise ValueError(str(error).replace("to: ", "", 1)) from None


def list_unsubscribe(request: DeliveryRequest, settings: EmailSettings) -> str | None:
    """The `List-Unsubscribe` header's value (RFC 2369): the one-click HTTPS link, then a mailto when
    `unsubscribeMailto` is set (subject `unsubscribe <token>`); None for a transactional message."""
    way_out = request.unsubscribe
    if way_out is None:
        return None
    links = [f"<{way_out.url}>"] if way_out.url else []
    if settings.unsubscribe_mailto:
        mailbox = _mailbox(settings.unsubscribe_mailto)
        links.append(f"<mailto:{quote(mailbox, safe='@')}?subject=unsubscribe%20{way_out.token}>")
    return ", ".join(links) or None


def _build(
    args: EmailArgs,
    sender: Address,
    recipients: list[Address],
    request: DeliveryRequest,
    unsubscribe: str | None,
) -> EmailMessage:
    message = EmailMessage()
    message["Message-ID"] = message_id(request.idempotency_key)
    message["Date"] = formatdate(request.now_ms / 1000, usegmt=True)
    message["From"] = sender
    message["To"] = recipients
    message["Subject"] = args.subject
    if unsubscribe is not None:
        message["List-Unsubscribe"] = unsubscribe
        if request.unsubscribe is not None and request.unsubscribe.url:  # RFC 8058: one click, by POST
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if args.text is not None:
        message.set_content(args.text)
        if args.html is not None:
            message.add_alternative(args.html, subtype="html")
    elif args.html is not None:
        message.set_content(args.html, subtype="html")
    return message


def _refusals(recipients: dict[str, tuple[int, bytes]]) -> str:
    return excerpt(
        "; ".join(
            f"{rcpt}: {code} {reply.decode(errors='replace')}" for rcpt, (code, reply) in recipients.items()
        ),
        400,
    )


class OutcomeUnknown(Exception):
    """The SMTP transaction broke off without a reply after it started: the server may have the message."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")


def _smtp_failure(error: Exception, sent: dict[str, Any]) -> DeliveryResult:
    """Classify an SMTP or connection error: 4xx replies and network trouble are worth retrying."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        temporary = all(400 <= code < 500 for code, _ in error.recipients.values())
        return failure(f"recipients refused: {_refusals(error.recipients)}", retryable=temporary, sent=sent)
    if isinstance(error, smtplib.SMTPResponseException):
        reply = error.smtp_error
        reply = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        return DeliveryResult(
            ok=False,
            retryable=400 <= error.smtp_code < 500,
            error=f"SMTP {error.smtp_code}: {excerpt(reply)}",
            status_code=error.smtp_code,
            response=excerpt(reply),
            sent=sent,
        )
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return failure(f"{type(error).__name__}: {error}", retryable=True, sent=sent)
    if isinstance(error, smtplib.SMTPException):
        # The rest (STARTTLS or AUTH not offered, no usable AUTH mechanism): the setup, not the moment.
        return failure(f"{type(error).__name__}: {error}", sent=sent)
    if isinstance(error, ssl.SSLCertVerificationError):  # a configuration problem: retrying will not help
        return failure(f"TLS certificate rejected: {error}", sent=sent)
    # Network and TLS trouble (refused, unreachable, reset, timed out, handshake failed): worth retrying.
    return failure(f"{type(error).__name__}: {error}", retryable=True, sent=sent)


def _send(
    message: EmailMessage,
    envelope: tuple[str, list[str]],
    settings: EmailSettings,
    host: str,
    timeout_s: float,
) -> dict[str, tuple[int, bytes]]:
    """One SMTP session; the recipients the server refused (when it accepted at least one)."""
    context = ssl.create_default_context()
    smtp = (
        smtplib.SMTP_SSL(host, settings.port, timeout=timeout_s, context=context)
        if settings.security == "ssl"
        else smtplib.SMTP(host, settings.port, timeout=timeout_s)
    )
    with smtp:
        if settings.security == "starttls":
            smtp.starttls(context=context)
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else ""
            smtp.login(settings.username, password)
        # The envelope is given, not read back from the headers: exactly the checked addresses.
        try:
            return smtp.send_message(message, from_addr=envelope[0], to_addrs=envelope[1])
        except smtplib.SMTPServerDisconnected as error:
            raise OutcomeUnknown(error) from error
        except smtplib.SMTPException:  # a reply (refused recipients, a 4xx/5xx to DATA): nothing was taken
            raise
        except OSError as error:
            # The connection failed while the message was being handed over, without a reply: it may
            # have been taken. (SMTPException is an OSError too, hence the order.)
            raise OutcomeUnknown(error) from error


def deliver_email(args: EmailArgs, settings: EmailSettings, request: DeliveryRequest) -> DeliveryResult:
    """Send the message through the configured SMTP server."""
    recipients = [args.to] if isinstance(args.to, str) else list(args.to)
    sender = args.from_ or settings.from_
    sent: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "security": settings.security,
        "username": settings.username,
        "from": sender,
        "to": recipients,
        "subject": args.subject,
        "messageId": message_id(request.idempotency_key),
        "text": args.text,
        "html": args.html,
    }
    unsubscribe = list_unsubscribe(request, settings)
    if unsubscribe is not None:
        sent["listUnsubscribe"] = unsubscribe
    if not settings.host:
        return failure("email is not configured: set email.host or FUNNELS_SMTP_HOST", sent=sent)
    if not sender:
        return failure("no sender: set args.from or email.from (FUNNELS_SMTP_FROM)", sent=sent)
    if not recipients:
        return failure("no recipients in args.to", sent=sent)
    try:
        sender_address = one_address(sender, "from")
        addresses = [one_address(recipient, "to") for recipient in recipients]
    except AddressInvalid as error:
        return failure(f"invalid address: {error}", sent=sent)
    try:
        message = _build(args, sender_address, addresses, request, unsubscribe)
    except (ValueError, TypeError) as error:  # e.g. a line break in a rendered subject (header injection)
        return failure(f"cannot build the message: {error}", sent=sent)
    envelope = (sender_address.addr_spec, [address.addr_spec for address in addresses])
    try:
        refused = _send(message, envelope, settings, settings.host, request.timeout_s)
    except OutcomeUnknown as error:
        return failure(str(error), retryable=True, sent=sent, maybe_delivered=True)
    except (smtplib.SMTPException, OSError) as error:
        return _smtp_failure(error, sent)
    if refused:
        # Some recipients took it: retrying would send it to them twice, so this counts as delivered.
        return DeliveryResult(ok=True, response=f"accepted, except {_refusals(refused)}", sent=sent)
    return DeliveryResult(ok=True, response="accepted", sent=sent)


CHANNEL = Channel(
    name="email",
    args=EmailArgs,
    settings=EmailSettings,
    deliver=deliver_email,
    env={
        "host": "FUNNELS_SMTP_HOST",
        "port": "FUNNELS_SMTP_PORT",
        "username": "FUNNELS_SMTP_USERNAME",
        "password": "FUNNELS_SMTP_PASSWORD",
        "security": "FUNNELS_SMTP_SECURITY",
        "from_": "FUNNELS_SMTP_FROM",
        "unsubscribe_mailto": "FUNNELS_UNSUBSCRIBE_MAILTO",
    },
    guarantee="at-most-once",  # its receivers cannot drop a repeated idempotency key
)
