"""Consent: the signed tokens of one-click unsubscribe links, what a link's page shows and does, and importing
opt-outs from a file (`funnels suppressions import`).

A token names one instance (its internal id) and one topic (`email:<topic>`, as the worker keys an action's
opt-outs: the action's `topic`, else its funnel's id), and carries an HMAC-SHA256 of both under a secret the
server generated once and keeps in the state store (`signing_keys`, name `unsubscribe`):

    token = b64url("<instance id>.<topic>") "." b64url(HMAC-SHA256(secret, "unsubscribe\\0" + first part))

(URL-safe base64 without padding.) Only the holder of the secret can make one, so a token is the capability
to unsubscribe that instance from that topic, and nothing else: it needs no sign-in. It names the instance's
internal id, never an address; it does not expire (an unsubscribe link in an old email must still work).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from funnels.clock import Clock
from funnels.config import SUBSCRIPTION_TOPIC, Config
from funnels.store import signing_keys, subscriptions
from funnels.store.identity import instances_with_ids, owners_in
from funnels.store.state import Connection, StateStore, chunks

KEY_NAME = "unsubscribe"
_PURPOSE = b"unsubscribe\0"
MAX_TOKEN_CHARS = 400  # far above any token made here (an instance id and a topic of at most 240 characters)
_TOPIC = re.compile(SUBSCRIPTION_TOPIC)
LINK_SOURCE = "link"
IMPORT_SOURCE = "import"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def action_topic(action_type: str, topic: str | None, funnel_id: str) -> str:
    """The opt-out topic an action's unsubscribe link names: `<channel>:<its topic, else its funnel's id>`."""
    return f"{action_type}:{topic or funnel_id}"


class UnsubscribeTokens:
    """Makes and checks tokens with the store's `unsubscribe` secret, read (or generated and stored) at the
    first use and kept in memory."""

    def __init__(self, state: StateStore, clock: Clock) -> None:
        self.state = state
        self.clock = clock
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def key(self) -> bytes:
        with self._lock:
            if self._key is None:
                candidate = secrets.token_urlsafe(32)
                with self.state.write() as connection:
                    stored = signing_keys.get_or_create(connection, KEY_NAME, candidate, self.clock.now_ms())
                self._key = stored.encode("ascii")
            return self._key

    def _signature(self, payload: str) -> str:
        return _b64(hmac.new(self.key(), _PURPOSE + payload.encode("ascii"), hashlib.sha256).digest())

    def make(self, instance_id: int, topic: str) -> str:
        payload = _b64(f"{instance_id}.{topic}".encode("ascii"))
        return f"{payload}.{self._signature(payload)}"

    def read(self, token: str) -> tuple[int, str] | None:
        """The (instance id, topic) a token this server made names; None for anything else. Every token of
        the expected shape costs the same: its signature is computed and compared (`hmac.compare_digest`)
        before anything in it is read."""
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            return None
        payload, dot, signature = token.partition(".")
        if not dot:
            return None
        if not hmac.compare_digest(self._signature(payload).encode(), signature.encode()):
            return None
        try:
            instance_text, _, topic = _unb64(payload).decode("ascii").partition(".")
            instance_id = int(instance_text)
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            return None
        if not _TOPIC.fullmatch(topic):
            return None
        return instance_id, topic


def link(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/u/{token}"


def needs_links(config: Config | None) -> bool:
    """Whether the config has a non-transactional email action (one that carries `List-Unsubscribe`)."""
    if config is None:
        return False
    return any(
        action.type == "email" and not action.transactional
        for funnel in config.funnels
        for step in funnel.steps
        for action in step.actions
    )


# --- the link's page ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """Who a valid token names, as its page shows them."""

    instance_id: int
    topic: str
    shown: str  # a masked address, else a masked display name, else "you"
    unsubscribed: bool  # already (from this topic or its whole channel)

    @property
    def what(self) -> str:
        """The topic in words: `all email`, `“onboarding” emails`."""
        channel, _, name = self.topic.partition(":")
        noun = {"email": "emails", "sms": "text messages"}.get(channel, f"{channel} messages")
        return f"“{name}” {noun}" if name else f"all {noun}"


def mask_address(address: str) -> str:
    """`ada.lovelace@example.com` → `a•••@example.com` (enough for its owner to recognise it)."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        return mask_name(address)
    return f"{local[0]}•••@{domain}"


def mask_name(name: str) -> str:
    name = name.strip()
    return f"{name[0]}•••" if name else "you"


def _shown(properties: dict[str, Any], display_name: str | None) -> str:
    email = properties.get("email")
    if isinstance(email, str) and email.strip():
        return mask_address(email)
    return mask_name(display_name or "")


def recipient(connection: Connection, instance_id: int, topic: str) -> Recipient | None:
    """The recipient a token names, None when the instance no longer exists."""
    found = instances_with_ids(connection, [instance_id]).get(instance_id)
    if found is None:
        return None
    instance = found[0]
    channel = topic.partition(":")[0]
    outs = {out.topic for out in subscriptions.opt_outs(connection, [instance_id]).get(instance_id, [])}
    return Recipient(
        instance_id, topic, _shown(instance.properties, instance.display_name), bool(outs & {topic, channel})
    )


def unsubscribe_by_link(
    connection: Connection, instance_id: int, topic: str, now_ms: int
) -> Recipient | None:
    """Unsubscribe the instance a token names from its topic (source `link`; again is a no-op); None when
    the instance no longer exists."""
    found = recipient(connection, instance_id, topic)
    if found is None:
        return None
    subscriptions.unsubscribe(connection, instance_id, topic, now_ms, LINK_SOURCE)
    return Recipient(found.instance_id, topic, found.shown, True)


# --- importing opt-outs ---------------------------------------------------------------------------------

# Header names (any case; spaces and hyphens read as `_`) of the columns a file may have. Customer.io's and
# Braze's exports name a person by `id` / `external_id` and `email`; Mailchimp's by `Email Address`.
ID_COLUMNS = ("id", "external_id", "user_id", "customer_id")
EMAIL_COLUMNS = ("email", "email_address")
IMPORT_BATCH = 500  # rows per write transaction


class SuppressionFileInvalid(ValueError):
    """The file cannot be read as opt-outs at all (not UTF-8, no usable header)."""


@dataclass(frozen=True)
class SuppressionRow:
    line: int
    model: str
    topic: str
    id: str | None  # one of the instance's ids, else
    email: str | None  # matched against instances' `email` property (any case)


@dataclass
class SuppressionReport:
    imported: int = 0  # rows that wrote an opt-out (or would, with --dry-run)
    already: int = 0  # rows whose instances had all unsubscribed from the topic before
    unknown: list[int] = field(default_factory=list)  # lines naming no instance
    opt_outs: int = 0  # opt-outs written: an address several instances share writes one each
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line, problem)


def _column(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def _cell(cells: list[str], at: int | None) -> str:
    return cells[at].strip() if at is not None and at < len(cells) else ""


def read_suppressions(
    data: bytes, model: str | None, topic: str
) -> tuple[list[SuppressionRow], list[tuple[int, str]]]:
    """The rows of a CSV file of opt-outs (a header row first; columns in `ID_COLUMNS` / `EMAIL_COLUMNS`,
    optional `model` and `topic`; other columns are ignored), and its bad rows as (line, problem). `model`
    and `topic` apply to rows without their own. `SuppressionFileInvalid` for a file that is not UTF-8 or
    has neither an id nor an email column."""
    try:
        text = data.decode("utf-8-sig")  # Excel writes a byte order mark
    except UnicodeDecodeError as error:
        raise SuppressionFileInvalid(f"not UTF-8 text (byte {error.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [_column(name) for name in next(reader)]
    except StopIteration:
        raise SuppressionFileInvalid("the file is empty: expected a header row") from None
    except csv.Error as error:
        raise SuppressionFileInvalid(f"line 1: {error}") from None
    columns = {name: index for index, name in reversed(list(enumerate(header)))}
    id_at = next((columns[name] for name in ID_COLUMNS if name in columns), None)
    email_at = next((columns[name] for name in EMAIL_COLUMNS if name in columns), None)
    if id_at is None and email_at is None:
        raise SuppressionFileInvalid(
            f"the header has no id column ({', '.join(ID_COLUMNS)}) and no email column "
            f"({', '.join(EMAIL_COLUMNS)})"
        )
    model_at, topic_at = columns.get("model"), columns.get("topic")
    rows: list[SuppressionRow] = []
    bad: list[tuple[int, str]] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            bad.append((reader.line_num, f"not CSV: {error}"))
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        row_model = _cell(cells, model_at) or model
        row_topic = _cell(cells, topic_at) or topic
        id_text, email = _cell(cells, id_at), _cell(cells, email_at)
        if not row_model:
            bad.append((line, "no model: give --model or a model column"))
        elif not _TOPIC.fullmatch(row_topic):
            bad.append((line, f"topic {row_topic!r} is not email, sms, email:<topic> or sms:<topic>"))
        elif not id_text and not email:
            bad.append((line, "no id and no email"))
        elif not id_text and "@" not in email:
            bad.append((line, f"email {email!r} is not an address"))
        else:
            rows.append(SuppressionRow(line, row_model, row_topic, id_text or None, email.lower() or None))
    return rows, bad


def import_suppressions(
    state: StateStore, rows: Sequence[SuppressionRow], now_ms: int, *, dry_run: bool = False
) -> SuppressionReport:
    """Unsubscribe the instances the rows name (source `import`), `IMPORT_BATCH` rows per transaction;
    with `dry_run`, only count what would change (nothing is written)."""
    report = SuppressionReport()
    by_email: dict[str, dict[str, list[int]]] = {}  # model → address → instances, read once per model
    for batch in chunks(rows, IMPORT_BATCH):
        if dry_run:
            with state.read() as connection:
                _import_batch(connection, batch, by_email, now_ms, report, write=False)
        else:
            with state.write() as connection:
                _import_batch(connection, batch, by_email, now_ms, report, write=True)
    return report


def _import_batch(
    connection: Connection,
    batch: Sequence[SuppressionRow],
    by_email: dict[str, dict[str, list[int]]],
    now_ms: int,
    report: SuppressionReport,
    *,
    write: bool,
) -> None:
    owners: dict[tuple[str, str], int] = {}
    for model in {row.model for row in batch}:
        named = [row.id for row in batch if row.model == model and row.id is not None]
        owners.update(
            ((model, id_text), owner) for id_text, owner in owners_in(connection, model, named).items()
        )
        if model not in by_email and any(row.model == model and row.id is None for row in batch):
            by_email[model] = subscriptions.instances_by_property(connection, model, "email")
    matched: dict[int, list[int]] = {}
    for row in batch:
        if row.id is not None:
            owner = owners.get((row.model, row.id))
            matched[row.line] = [] if owner is None else [owner]
        else:
            matched[row.line] = by_email.get(row.model, {}).get(row.email or "", [])
    existing = subscriptions.opt_outs(connection, {i for ids in matched.values() for i in ids})
    for row in batch:
        instance_ids = matched[row.line]
        if not instance_ids:
            report.unknown.append(row.line)
            continue
        added = 0
        for instance_id in instance_ids:
            had = {out.topic for out in existing.get(instance_id, [])}
            if write:
                added += subscriptions.unsubscribe(connection, instance_id, row.topic, now_ms, IMPORT_SOURCE)
            else:
                added += row.topic not in had
            existing.setdefault(instance_id, []).append(
                subscriptions.OptOut(row.topic, now_ms, IMPORT_SOURCE)
            )
        report.opt_outs += added
        if added:
            report.imported += 1
        else:
            report.already += 1
