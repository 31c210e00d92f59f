"""The Segment message → `Event` mapping: every field rule of `funnels.ingest.segment`."""

from __future__ import annotations

from typing import Any

import pytest

from funnels.events import Event, parse_timestamp
from funnels.ingest.segment import SegmentValidationError, UserAgentInfo, classify_user_agent, segment_event

RECEIVED = parse_timestamp("2026-04-01T12:00:00Z")

IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
IPAD_SAFARI = (
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
ANDROID_TABLET_CHROME = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def event(message: dict[str, Any], **kwargs: Any) -> Event:
    return segment_event(message, RECEIVED, **kwargs)


def errors(message: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(SegmentValidationError) as caught:
        segment_event(message, RECEIVED, **kwargs)
    return caught.value.details


def test_track_maps_identity_name_id_and_properties() -> None:
    result = event(
        {
            "userId": "u1",
            "anonymousId": "a1",
            "event": "Signed Up",
            "messageId": "m-1",
            "properties": {"plan": "pro", "seats": 3},
        },
        type_="track",
    )
    assert (result.type, result.event, result.event_id) == ("track", "Signed Up", "m-1")
    assert (result.user_key, result.user_id, result.anonymous_id) == ("u1", "u1", "a1")
    assert result.properties == {"plan": "pro", "seats": 3}
    assert (result.ts_ms, result.received_ms) == (RECEIVED, RECEIVED)


def test_user_key_falls_back_to_anonymous_id_and_numbers_are_text() -> None:
    anonymous = event({"anonymousId": 42, "event": "x"}, type_="track")
    assert (anonymous.user_key, anonymous.user_id, anonymous.anonymous_id) == ("42", "", "42")
    numeric = event({"userId": 7, "anonymousId": "", "event": "x"}, type_="track")
    assert (numeric.user_key, numeric.user_id) == ("7", "7")


def test_an_identity_is_required_and_must_be_text_or_number() -> None:
    assert errors({"event": "x"}, type_="track") == {
        "body.userId": "one of userId or anonymousId is required"
    }
    assert errors({"userId": "", "anonymousId": None, "event": "x"}, type_="track").keys() == {"body.userId"}
    assert errors({"userId": {"id": 1}, "event": "x"}, type_="track").keys() == {"body.userId"}
    assert errors({"anonymousId": True, "event": "x"}, type_="track").keys() == {"body.anonymousId"}
    assert errors({"userId": "u" * 401, "event": "x"}, type_="track").keys() == {"body.userId"}


def test_message_id_is_generated_when_absent() -> None:
    first = event({"userId": "u", "event": "x"}, type_="track")
    second = event({"userId": "u", "event": "x", "messageId": ""}, type_="track")
    assert len(first.event_id) == 32 and first.event_id != second.event_id
    assert errors({"userId": "u", "event": "x", "messageId": ["m"]}, type_="track").keys() == {
        "body.messageId"
    }


def test_track_requires_an_event_name() -> None:
    assert errors({"userId": "u"}, type_="track") == {"body.event": "is required for track (the event name)"}
    assert errors({"userId": "u", "event": ""}, type_="track").keys() == {"body.event"}
    assert errors({"userId": "u", "event": 5}, type_="track") == {"body.event": "must be a string"}
    assert errors({"userId": "u", "event": "e" * 201}, type_="track").keys() == {"body.event"}


@pytest.mark.parametrize(
    ("type_", "message", "name"),
    [
        ("page", {"name": "Pricing"}, "Pricing"),
        ("page", {}, "page"),
        ("page", {"name": ""}, "page"),
        ("screen", {"name": "Home"}, "Home"),
        ("screen", {"name": None}, "screen"),
        ("identify", {"event": "ignored"}, "identify"),
        ("group", {"name": "ignored"}, "group"),
        ("alias", {}, "alias"),
    ],
)
def test_event_names_by_type(type_: str, message: dict[str, Any], name: str) -> None:
    result = event({"userId": "u", **message}, type_=type_)
    assert (result.type, result.event) == (type_, name)


def test_page_and_screen_keep_their_properties() -> None:
    page = event(
        {"userId": "u", "name": "Docs", "properties": {"title": "Docs", "url": "https://x.io/docs"}},
        type_="page",
    )
    assert page.properties == {"title": "Docs", "url": "https://x.io/docs"}
    screen = event({"userId": "u", "properties": {"tab": 2}}, type_="screen")
    assert screen.properties == {"tab": 2}


def test_identify_and_group_store_traits_as_properties_and_alias_keeps_previous_id() -> None:
    identify = event({"userId": "u", "traits": {"email": "a@b.c", "plan": "pro"}}, type_="identify")
    assert identify.properties == {"email": "a@b.c", "plan": "pro"}
    group = event({"userId": "u", "groupId": "g1", "traits": {"name": "Acme"}}, type_="group")
    assert group.properties == {"name": "Acme", "groupId": "g1"}
    alias = event({"userId": "u", "previousId": "anon-1", "properties": {"ignored": 1}}, type_="alias")
    assert alias.properties == {"previousId": "anon-1"}


def test_properties_and_traits_must_be_objects() -> None:
    assert errors({"userId": "u", "event": "x", "properties": [1]}, type_="track") == {
        "body.properties": "must be an object"
    }
    assert errors({"userId": "u", "traits": "vip"}, type_="identify") == {"body.traits": "must be an object"}
    assert event({"userId": "u", "event": "x", "properties": None}, type_="track").properties == {}


def test_path_type_wins_over_the_body_type() -> None:
    result = event({"type": "identify", "userId": "u", "event": "Clicked"}, type_="track")
    assert (result.type, result.event) == ("track", "Clicked")
    assert errors({"type": "identify", "userId": "u"}, type_="track").keys() == {"body.event"}


def test_batch_messages_need_a_known_type_and_get_indexed_paths() -> None:
    assert event({"type": "Track", "userId": "u", "event": "x"}).type == "track"
    problems = errors({"event": "x"}, path="body.batch.3")
    assert problems == {
        "body.batch.3.type": "must be one of track, page, screen, identify, group, alias",
        "body.batch.3.userId": "one of userId or anonymousId is required",
    }
    assert errors({"type": "purchase", "userId": "u"}).keys() == {"body.type"}
    assert errors(["not", "an", "object"], path="body.batch.0") == {
        "body.batch.0": "a message must be a JSON object"
    }


def test_timestamp_is_used_as_given() -> None:
    message = {
        "userId": "u",
        "event": "x",
        "timestamp": "2026-03-31T10:00:00.250Z",
        "originalTimestamp": "2020-01-01T00:00:00Z",
        "sentAt": "2020-01-01T00:00:00Z",
    }
    assert event(message, type_="track").ts_ms == parse_timestamp("2026-03-31T10:00:00.250Z")
    assert (
        event({"userId": "u", "event": "x", "timestamp": 1_775_000_000_000}, type_="track").ts_ms
        == 1_775_000_000_000
    )


def test_original_timestamp_is_corrected_by_clock_skew() -> None:
    # The device clock is 1 h behind: it stamped the event at 10:00:00 and sent it at 10:59:58 (its time);
    # we received it at 12:00:00, so the event happened at 10:00:00 + (12:00:00 − 10:59:58) = 11:00:02.
    message = {
        "userId": "u",
        "event": "x",
        "originalTimestamp": "2026-04-01T10:00:00Z",
        "sentAt": "2026-04-01T10:59:58Z",
    }
    assert event(message, type_="track").ts_ms == parse_timestamp("2026-04-01T11:00:02Z")


def test_batch_sent_at_applies_unless_the_message_has_its_own() -> None:
    message = {"type": "track", "userId": "u", "event": "x", "originalTimestamp": "2026-04-01T11:00:00Z"}
    assert event(message, batch_sent_at="2026-04-01T11:30:00Z").ts_ms == parse_timestamp(
        "2026-04-01T11:30:00Z"
    )
    own = {**message, "sentAt": "2026-04-01T11:00:00Z"}
    assert event(own, batch_sent_at="2026-04-01T11:30:00Z").ts_ms == parse_timestamp("2026-04-01T12:00:00Z")


def test_original_timestamp_without_sent_at_is_used_as_is_and_no_timestamp_means_receive_time() -> None:
    original = {"userId": "u", "event": "x", "originalTimestamp": "2026-04-01T09:00:00Z"}
    assert event(original, type_="track").ts_ms == parse_timestamp("2026-04-01T09:00:00Z")
    assert (
        event({"userId": "u", "event": "x", "sentAt": "2026-04-01T09:00:00Z"}, type_="track").ts_ms
        == RECEIVED
    )


def test_bad_timestamps_are_reported_by_path() -> None:
    assert errors({"userId": "u", "event": "x", "timestamp": "yesterday"}, type_="track").keys() == {
        "body.timestamp"
    }
    skewed = {"userId": "u", "event": "x", "originalTimestamp": "2026-04-01T10:00:00Z", "sentAt": "soon"}
    assert errors(skewed, type_="track").keys() == {"body.sentAt"}
    batch_skewed = {"type": "track", "userId": "u", "event": "x", "originalTimestamp": "2026-04-01T10:00:00Z"}
    assert errors(batch_skewed, path="body.batch.0", batch_sent_at="soon").keys() == {"body.sentAt"}
    out_of_range = {"userId": "u", "event": "x", "originalTimestamp": 1_000, "sentAt": "2199-12-31T00:00:00Z"}
    assert errors(out_of_range, type_="track").keys() == {"body.originalTimestamp"}


def test_campaign_maps_to_utm_columns() -> None:
    campaign = {"source": "google", "medium": "cpc", "name": "spring", "content": "banner", "term": "funnels"}
    result = event({"userId": "u", "event": "x", "context": {"campaign": campaign}}, type_="track")
    assert result.columns == {
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "spring",
        "utm_content": "banner",
        "utm_term": "funnels",
    }


def test_page_locale_timezone_app_and_location_columns() -> None:
    context = {
        "page": {"path": "/pricing", "referrer": "https://news.ycombinator.com/"},
        "locale": "en-US",
        "timezone": "Europe/Berlin",
        "app": {"name": "Shop", "version": "3.1.4", "build": "77"},
        "location": {"country": "DE", "city": "Berlin"},
    }
    result = event({"userId": "u", "name": "Pricing", "context": context}, type_="page")
    assert result.columns == {
        "page_path": "/pricing",
        "referrer": "https://news.ycombinator.com/",
        "locale": "en-US",
        "timezone": "Europe/Berlin",
        "version": "3.1.4",
        "location": "DE",
    }


def test_page_path_and_referrer_fall_back_to_properties() -> None:
    properties = {"path": "/docs", "referrer": "https://google.com/"}
    result = event({"userId": "u", "properties": properties}, type_="page")
    assert (result.columns["page_path"], result.columns["referrer"]) == ("/docs", "https://google.com/")
    both = event(
        {"userId": "u", "properties": properties, "context": {"page": {"path": "/ctx"}}}, type_="page"
    )
    assert both.columns["page_path"] == "/ctx"


def test_standard_columns_in_context_win_and_segment_objects_are_not_taken_verbatim() -> None:
    context = {
        "userAgent": WINDOWS_CHROME,
        "device": "kiosk",
        "utm_source": "newsletter",
        "campaign": {"source": "google"},
        "os": {"name": "Windows", "version": "10"},
        "referrer": {"type": "link", "url": "https://a.io"},
        "direct": True,
    }
    result = event({"userId": "u", "event": "x", "context": context}, type_="track")
    assert result.columns == {
        "device": "kiosk",
        "browser": "Chrome",
        "os": "Windows",
        "utm_source": "newsletter",
        "direct": "true",
    }


def test_os_falls_back_to_context_os_name_for_mobile_sdks() -> None:
    context = {"os": {"name": "iOS", "version": "17.4"}, "device": {"type": "ios", "model": "iPhone15,2"}}
    result = event({"userId": "u", "name": "Home", "context": context}, type_="screen")
    assert result.columns == {"os": "iOS"}


def test_non_scalar_values_are_ignored_and_bad_context_is_reported() -> None:
    context = {"page": {"path": ["/a"]}, "locale": {"x": 1}, "campaign": "spring", "userAgent": 12}
    assert event({"userId": "u", "event": "x", "context": context}, type_="track").columns == {}
    assert errors({"userId": "u", "event": "x", "context": "web"}, type_="track") == {
        "body.context": "must be an object"
    }


def test_batch_context_is_merged_under_the_message_context() -> None:
    batch_context = {"locale": "de-DE", "timezone": "Europe/Berlin"}
    message = {"type": "track", "userId": "u", "event": "x", "context": {"locale": "en-GB"}}
    assert event(message, batch_context=batch_context).columns == {
        "locale": "en-GB",
        "timezone": "Europe/Berlin",
    }


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        (IPHONE_SAFARI, UserAgentInfo(device="mobile", browser="Mobile Safari", os="iOS")),
        (ANDROID_CHROME, UserAgentInfo(device="mobile", browser="Chrome Mobile", os="Android")),
        (WINDOWS_CHROME, UserAgentInfo(device="desktop", browser="Chrome", os="Windows")),
        (IPAD_SAFARI, UserAgentInfo(device="tablet", browser="Mobile Safari", os="iOS")),
        (ANDROID_TABLET_CHROME, UserAgentInfo(device="tablet", browser="Chrome", os="Android")),
        (MAC_SAFARI, UserAgentInfo(device="desktop", browser="Safari", os="Mac OS X")),
        (GOOGLEBOT, UserAgentInfo(device="bot", browser="Googlebot", os="")),
        ("curl/8.4.0", UserAgentInfo(device="other", browser="curl", os="")),
        ("analytics-python/2.4.0", UserAgentInfo()),
    ],
)
def test_user_agents_are_classified(user_agent: str, expected: UserAgentInfo) -> None:
    assert classify_user_agent(user_agent) == expected


def test_user_agent_fills_device_browser_and_os_columns() -> None:
    result = event({"userId": "u", "event": "x", "context": {"userAgent": IPHONE_SAFARI}}, type_="track")
    assert result.columns == {"device": "mobile", "browser": "Mobile Safari", "os": "iOS"}
    server = event(
        {"userId": "u", "event": "x", "context": {"userAgent": "analytics-python/2.4.0"}}, type_="track"
    )
    assert server.columns == {}
