"""Segment messages → `Event`: the pure mapping behind the Segment-compatible endpoints (`/v1/*`).

One Segment message (a dict, as decoded from JSON) becomes one `Event`. Every problem is collected and
reported at once as `SegmentValidationError.details`, mapping a field path (`body.userId`,
`body.batch.3.event`) to what is wrong with it. Unknown fields (`integrations`, `context.library`, …) are
ignored, as Segment does.

Type
    A single-message endpoint (`/v1/track`, `/v1/t`, …) passes its type and the body's `type` field is
    ignored, whatever it says: the path decides, so a client can never store a `track` without an event name
    by mislabelling it. A batch message needs its own `type`: one of track, page, screen, identify, group,
    alias (case-insensitive).

Identity
    `userId` and `anonymousId` are strings or numbers (numbers are stored as their text); at least one must
    be non-empty. `user_key` is `userId` when present, else `anonymousId`.

Event id
    `messageId` (a string or number) becomes `event_id`, the dedup key; when absent or empty one is
    generated with `new_event_id()`.

Event name
    track: `event`, required. page / screen: `name`, else "page" / "screen". identify / group / alias: the
    type itself. At most 200 characters.

Time (`ts_ms`)
    `timestamp` when given (server libraries set it; it is trusted as is). Otherwise `originalTimestamp`
    (the device's clock) corrected for clock skew as Segment does:
    `originalTimestamp + (receivedAt − sentAt)`, where `receivedAt` is our receive time and `sentAt` is the
    message's own, else the batch's. With no `sentAt` there is nothing to correct by and `originalTimestamp`
    is used as is. With neither timestamp field the receive time is used. All three accept ISO 8601 or epoch
    milliseconds (`parse_timestamp`).

Properties
    track / page / screen: `properties`. identify and group have no properties, so their `traits` are stored
    as the properties (that is where funnels can filter on them); group also stores `groupId` and alias
    stores `previousId` as a property of that name, so nothing identifying is lost. `properties` / `traits`
    must be objects when present (null counts as absent).

Standard columns (from `context`; a batch's top-level `context` is merged under each message's, key by key)
    - `context.campaign.{source,medium,name,content,term}` → utm_source / utm_medium / utm_campaign /
      utm_content / utm_term
    - `context.page.path`, else `properties.path` → page_path
    - `context.page.referrer`, else `properties.referrer` → referrer
    - `context.locale` → locale; `context.timezone` → timezone
    - `context.app.version` → version; `context.location.country` → location
    - `context.userAgent` (its first 512 characters), parsed with ua-parser → browser (its family, e.g.
      "Chrome Mobile"), os (its family, e.g. "iOS"; when the user agent names no OS, `context.os.name` as the
      mobile SDKs send it) and device, a category chosen by the first rule that matches (`device_category`):
        1. "bot": ua-parser's device family is "Spider" (its marker for crawlers);
        2. "tablet": the device family, brand or model mentions iPad, Tablet or Kindle;
        3. "mobile": the OS is a phone OS (iOS, Android, Windows Phone, …), the browser family contains
           "Mobile", or the device model mentions iPhone, iPod or Smartphone;
        4. "desktop": any other recognised OS (Windows, Mac OS X, Linux, Chrome OS, …);
        5. "other": ua-parser recognised only a browser or library (curl, Python Requests);
      and no device at all when ua-parser recognises nothing (e.g. a server library's user agent).
    - Finally, any of our standard column names (`STANDARD_COLUMNS`) present in `context` with a string,
      number or boolean value is stored as is and wins over the values derived above. Segment's own objects
      of the same names (`context.os`, `context.device`, `context.location`, `context.referrer`) are not
      scalars and are therefore never taken verbatim.
    Values of other types in the fields above (an object where text is expected) are ignored, not rejected:
    the message is still stored. Empty values store no column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ua_parser import parse as parse_user_agent

from funnels.events import (
    MAX_NAME_LENGTH,
    Event,
    column_text,
    id_text,
    nesting_problem,
    new_event_id,
    parse_timestamp,
)
from funnels.types import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, STANDARD_COLUMNS, JSONDict

SEGMENT_TYPES: Final[tuple[str, ...]] = ("track", "page", "screen", "identify", "group", "alias")
MAX_MESSAGE_BYTES: Final[int] = 32 * 1024  # Segment's per-message limit
MAX_BATCH_BYTES: Final[int] = 500 * 1024  # Segment's per-batch-request limit
MAX_USER_AGENT_LENGTH: Final[int] = 512  # longer user agents are truncated before parsing (bounds its cost)

CAMPAIGN_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("source", "utm_source"),
    ("medium", "utm_medium"),
    ("name", "utm_campaign"),
    ("content", "utm_content"),
    ("term", "utm_term"),
)
MOBILE_OS: Final[frozenset[str]] = frozenset(
    {
        "ios",
        "android",
        "windows phone",
        "windows mobile",
        "blackberry os",
        "kaios",
        "firefox os",
        "symbian os",
    }
)


class SegmentValidationError(ValueError):
    """A message that cannot be mapped; `details` maps each field path to its problem."""

    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("; ".join(f"{path}: {problem}" for path, problem in details.items()))
        self.details = details


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    """What a user agent tells us, as standard-column text ("" when unknown)."""

    device: str = ""
    browser: str = ""
    os: str = ""


def _known(family: str | None) -> str:
    return "" if family is None or family == "Other" else family


def device_category(device_family: str, brand: str, model: str, os_family: str, browser_family: str) -> str:
    """The device category of ua-parser's parts, by the module docstring's rules ("" if nothing known)."""
    if device_family == "Spider":
        return "bot"
    hardware = f"{device_family} {brand} {model}".lower()
    if any(word in hardware for word in ("ipad", "tablet", "kindle")):
        return "tablet"
    if (
        os_family.lower() in MOBILE_OS
        or "mobile" in browser_family.lower()
        or any(word in hardware for word in ("iphone", "ipod", "smartphone"))
    ):
        return "mobile"
    if os_family:
        return "desktop"
    if browser_family or device_family:
        return "other"
    return ""


def classify_user_agent(user_agent: str) -> UserAgentInfo:
    """Device category, browser family and OS family of a user agent string, parsed with ua-parser."""
    result = parse_user_agent(user_agent[:MAX_USER_AGENT_LENGTH])
    browser = _known(result.user_agent.family if result.user_agent else None)
    os_family = _known(result.os.family if result.os else None)
    device = result.device
    device_family = _known(device.family if device else None)
    brand = (device.brand or "") if device else ""
    model = (device.model or "") if device else ""
    return UserAgentInfo(
        device=device_category(device_family, brand, model, os_family, browser),
        browser=browser,
        os=os_family,
    )


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _scalar_text(value: Any) -> str:
    """Text of a string, number or boolean; "" for anything else (objects are ignored, not rejected)."""
    try:
        return column_text(value) or ""
    except ValueError:
        return ""


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _columns(context: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, str]:
    columns: dict[str, str] = {}

    def put(name: str, *candidates: Any) -> None:
        for candidate in candidates:
            text = _scalar_text(candidate)
            if text:
                columns[name] = text
                return

    campaign = _object(context.get("campaign"))
    for key, column in CAMPAIGN_COLUMNS:
        put(column, campaign.get(key))
    page = _object(context.get("page"))
    put("page_path", page.get("path"), properties.get("path"))
    put("referrer", page.get("referrer"), properties.get("referrer"))
    put("locale", context.get("locale"))
    put("timezone", context.get("timezone"))
    put("version", _object(context.get("app")).get("version"))
    put("location", _object(context.get("location")).get("country"))
    user_agent = context.get("userAgent")
    info = (
        classify_user_agent(user_agent)
        if isinstance(user_agent, str) and user_agent.strip()
        else UserAgentInfo()
    )
    put("device", info.device)
    put("browser", info.browser)
    put("os", info.os, _object(context.get("os")).get("name"))
    for name in STANDARD_COLUMNS:
        if name in context:
            text = _scalar_text(context[name])
            if text:
                columns[name] = text
    return columns


def _time(
    message: Mapping[str, Any],
    received_ms: int,
    path: str,
    batch_sent_at: Any,
    details: dict[str, str],
) -> int:
    def parse(value: Any, field_path: str) -> int | None:
        try:
            return parse_timestamp(value)
        except ValueError as error:
            details[field_path] = str(error)
            return None

    if _present(message.get("timestamp")):
        timestamp = parse(message["timestamp"], f"{path}.timestamp")
        return received_ms if timestamp is None else timestamp
    if not _present(message.get("originalTimestamp")):
        return received_ms
    original = parse(message["originalTimestamp"], f"{path}.originalTimestamp")
    if _present(message.get("sentAt")):
        sent_at = parse(message["sentAt"], f"{path}.sentAt")
    elif _present(batch_sent_at):
        sent_at = parse(batch_sent_at, "body.sentAt")
    else:
        return original if original is not None else received_ms
    if original is None or sent_at is None:
        return received_ms
    corrected = original + (received_ms - sent_at)
    if not MIN_TIMESTAMP_MS <= corrected <= MAX_TIMESTAMP_MS:
        details[f"{path}.originalTimestamp"] = (
            "is outside 1970-01-01..2199-12-31 after clock-skew correction by sentAt"
        )
        return received_ms
    return corrected


def _event_name(message: Mapping[str, Any], type_: str, path: str, details: dict[str, str]) -> str:
    field = {"track": "event", "page": "name", "screen": "name"}.get(type_)
    if field is None:
        return type_
    value = message.get(field)
    if not _present(value):
        if type_ == "track":
            details[f"{path}.event"] = "is required for track (the event name)"
        return type_
    if not isinstance(value, str):
        details[f"{path}.{field}"] = "must be a string"
        return type_
    if len(value) > MAX_NAME_LENGTH:
        details[f"{path}.{field}"] = f"must be at most {MAX_NAME_LENGTH} characters"
        return type_
    return value


def _properties(message: Mapping[str, Any], type_: str, path: str, details: dict[str, str]) -> JSONDict:
    field = "traits" if type_ in ("identify", "group") else "properties"
    value = message.get(field)
    if value is not None and not isinstance(value, dict):
        details[f"{path}.{field}"] = "must be an object"
        value = None
    properties: JSONDict = dict(value or {}) if type_ != "alias" else {}
    extra = {"group": "groupId", "alias": "previousId"}.get(type_)
    if extra and message.get(extra) is not None:
        properties[extra] = message[extra]
    return properties


def _message_type(
    message: Mapping[str, Any], type_: str | None, path: str, details: dict[str, str]
) -> str | None:
    if type_ is not None:
        return type_
    value = message.get("type")
    if isinstance(value, str) and value.strip().lower() in SEGMENT_TYPES:
        return value.strip().lower()
    details[f"{path}.type"] = f"must be one of {', '.join(SEGMENT_TYPES)}"
    return None


def _id(message: Mapping[str, Any], field: str, path: str, details: dict[str, str]) -> str:
    try:
        return id_text(message.get(field))
    except ValueError as error:
        details[f"{path}.{field}"] = str(error)
        return ""


def segment_event(
    message: Any,
    received_ms: int,
    *,
    type_: str | None = None,
    path: str = "body",
    batch_sent_at: Any = None,
    batch_context: Mapping[str, Any] | None = None,
) -> Event:
    """Map one Segment message to an `Event`, or raise `SegmentValidationError` naming every bad field."""
    if type_ is not None and type_ not in SEGMENT_TYPES:
        raise ValueError(f"unknown Segment type {type_!r}")
    if not isinstance(message, dict):
        raise SegmentValidationError({path: "a message must be a JSON object"})
    if too_deep := nesting_problem(message, path):
        raise SegmentValidationError(too_deep)
    details: dict[str, str] = {}
    kind = _message_type(message, type_, path, details)
    user_id = _id(message, "userId", path, details)
    anonymous_id = _id(message, "anonymousId", path, details)
    if (
        not user_id
        and not anonymous_id
        and f"{path}.userId" not in details
        and f"{path}.anonymousId" not in details
    ):
        details[f"{path}.userId"] = "one of userId or anonymousId is required"
    event_id = _id(message, "messageId", path, details) or new_event_id()
    context = message.get("context")
    if context is not None and not isinstance(context, dict):
        details[f"{path}.context"] = "must be an object"
        context = None
    merged_context = {**(batch_context or {}), **(context or {})}
    ts_ms = _time(message, received_ms, path, batch_sent_at, details)
    name = _event_name(message, kind, path, details) if kind else ""
    properties = _properties(message, kind, path, details) if kind else {}
    if details or kind is None:  # a missing or unknown type is always in `details`
        raise SegmentValidationError(details)
    return Event(
        event_id=event_id,
        type=kind,
        event=name,
        user_key=user_id or anonymous_id,
        user_id=user_id,
        anonymous_id=anonymous_id,
        ts_ms=ts_ms,
        received_ms=received_ms,
        properties=properties,
        columns=_columns(merged_context, _object(message.get("properties"))),
    )
