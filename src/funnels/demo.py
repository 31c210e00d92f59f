"""`funnels demo`: a fresh data directory with the bundled sample dataset and an all-scopes key.

The sample dataset is generated here from a fixed seed (so every demo shows the same funnel shape), dated
over the 30 days up to today so the dashboard's default range shows it: 6,000 users visiting pages, some
connecting a wallet, some swapping, with devices, browsers, countries, referrers and UTM campaigns.

40% of the visitors land anonymously, as analytics.js sends a visitor who has not logged in: their page
views carry only an anonymous id (a UUID). Those who connect a wallet are identified then (an identify
event with both ids, the moment before the connect) and send both ids from there on; those who never
connect stay anonymous. So the demo shows identity stitching: stitched, each visitor is one person whose
journey is the one generated; with `identity=raw`, an identified visitor's anonymous page views and their
later events are two users, and fewer of them convert. Who lands anonymously, and their ids, are drawn from
a second generator, so the journeys (times, pages, conversions) are the same as without them.
"""

from __future__ import annotations

import random
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import orjson

from funnels.auth import create_key
from funnels.clock import SystemClock
from funnels.demo_automation import seed_automation
from funnels.events import Event
from funnels.services import Services

SEED = 20260401
USERS = 6_000
DAYS = 30
ANONYMOUS_SHARE = 0.4  # of the visitors, who land anonymously (see the module's docstring)

DEMO_STEPS = [
    {"type": "event", "event": "page", "name": "page::0", "filters": []},
    {"type": "track", "event": "connect", "name": "connect::1", "filters": []},
    {
        "type": "track",
        "event": "swap",
        "name": "swap::2",
        "filters": [{"operand": "chain", "operator": "equals", "value": "ethereum"}],
    },
]

_SOURCES = [
    ("google", "cpc", "spring_launch"),
    ("twitter", "social", "airdrop"),
    ("farcaster", "social", "frames"),
    ("newsletter", "email", "weekly"),
    ("", "", ""),
]
_DEVICES = [
    ("desktop", "Chrome", "Mac OS X"),
    ("desktop", "Firefox", "Windows"),
    ("mobile", "Mobile Safari", "iOS"),
    ("mobile", "Chrome Mobile", "Android"),
    ("tablet", "Mobile Safari", "iOS"),
]
_COUNTRIES = ["US", "DE", "GB", "FR", "IN", "BR", "SG", "CA"]
_REFERRERS = ["https://www.google.com/", "https://twitter.com/", "https://warpcast.com/", "", ""]


@dataclass(frozen=True)
class DemoResult:
    data_dir: Path
    key: str
    events: int
    users: int
    query_string: str
    config_path: Path  # the automation config (funnels.yaml in the data directory)
    sink_port: int  # the port of the demo's webhook sink (run it again while serving: `DemoSink(port)`)


def sample_events(today: datetime, users: int = USERS, seed: int = SEED) -> list[Event]:
    """The sample dataset: page → connect → swap journeys with attribution, ending on `today`."""
    rnd = random.Random(seed)
    who = random.Random(seed + 1)  # who lands anonymously, and their ids: apart from the journeys' draws
    start_ms = int((today - timedelta(days=DAYS)).timestamp() * 1000)
    span_ms = DAYS * 86_400_000
    events: list[Event] = []
    counter = 0
    user_id, anonymous_id = "", ""  # the ids the current visitor's events carry

    def add(type_: str, name: str, ts: int, columns: dict[str, str], properties: dict[str, object]) -> None:
        nonlocal counter
        counter += 1
        events.append(
            Event(
                event_id=f"demo-{counter}",
                type=type_,
                event=name,
                user_key=user_id or anonymous_id,
                user_id=user_id,
                anonymous_id=anonymous_id,
                ts_ms=ts,
                received_ms=ts,
                properties=properties,
                columns={k: v for k, v in columns.items() if v},
            )
        )

    def identify(user: str, ts: int, columns: dict[str, str]) -> None:
        """The anonymous visitor logs in as `user`: an identify with both ids, then both ids on every event."""
        nonlocal user_id
        user_id = user
        events.append(
            Event(
                event_id=f"demo-identify-{user}",
                type="identify",
                event="identify",
                user_key=user,
                user_id=user,
                anonymous_id=anonymous_id,
                ts_ms=ts,
                received_ms=ts,
                columns={k: v for k, v in columns.items() if v},
            )
        )

    for index in range(users):
        user = f"user-{index:05d}"
        anonymous = who.random() < ANONYMOUS_SHARE
        user_id = "" if anonymous else user
        anonymous_id = str(uuid.UUID(int=who.getrandbits(128), version=4)) if anonymous else ""
        source, medium, campaign = rnd.choices(_SOURCES, weights=[30, 20, 10, 10, 30])[0]
        device, browser, os_ = rnd.choices(_DEVICES, weights=[35, 15, 25, 20, 5])[0]
        first = {
            "utm_source": source,
            "utm_medium": medium,
            "utm_campaign": campaign,
            "device": device,
            "browser": browser,
            "os": os_,
            "location": rnd.choice(_COUNTRIES),
            "referrer": rnd.choice(_REFERRERS),
        }
        later = {"device": device, "browser": browser, "os": os_, "location": first["location"]}
        t = start_ms + rnd.randrange(span_ms)
        for visit in range(rnd.choice([1, 1, 1, 2, 3])):
            columns = first if visit == 0 else later
            for path in rnd.sample(["/", "/swap", "/earn", "/docs", "/pricing"], k=rnd.randint(1, 3)):
                add(
                    "page",
                    "page",
                    t,
                    {**columns, "page_path": path},
                    {"title": path.strip("/") or "home"},
                )
                t += rnd.randint(2_000, 90_000)
            converts = {"desktop": 0.5, "mobile": 0.35, "tablet": 0.3}[device] + (
                0.1 if source == "twitter" else 0
            )
            if rnd.random() < converts:
                t += rnd.randint(5_000, 600_000)
                provider = rnd.choice(["MetaMask", "Rabby", "Coinbase Wallet"])
                if not user_id:
                    identify(user, t - 1, later)
                add("track", "connect", t, later, {"provider_name": provider})
                if rnd.random() < 0.45:
                    t += rnd.randint(20_000, 3 * 86_400_000)
                    chain = rnd.choices(["ethereum", "base", "polygon"], weights=[50, 35, 15])[0]
                    add(
                        "track",
                        "swap",
                        t,
                        later,
                        {"chain": chain, "price": round(rnd.uniform(5, 900), 2)},
                    )
            t += rnd.randint(3_600_000, 5 * 86_400_000)
    return [event for event in events if event.ts_ms <= int(today.timestamp() * 1000)]


def persons(events: list[Event]) -> int:
    """How many visitors the events are from: an anonymous id identified as a user counts with that user."""
    links = {event.anonymous_id: event.user_id for event in events if event.user_id and event.anonymous_id}
    return len({links.get(event.user_key, event.user_key) for event in events})


def setup_demo(data_dir: Path, today: datetime | None = None, sink_port: int = 0) -> DemoResult:
    """Recreate `data_dir` with the sample dataset, an all-scopes key, and the automation demo: a config
    (`funnels.yaml`) and customers whose deliveries are in every status (see `funnels.demo_automation`)."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    now = today or datetime.now(UTC)
    day_end = now.replace(hour=23, minute=59, second=59, microsecond=0)
    events = sample_events(day_end)
    svc = Services.open(data_dir.resolve())
    try:
        for offset in range(0, len(events), 50_000):
            svc.events.insert_events(events[offset : offset + 50_000])
        key = create_key(svc.state, SystemClock(), ["events:write", "query:read", "admin"], name="demo")
    finally:
        svc.close()
    config_path, sink_port = seed_automation(data_dir.resolve(), now, sink_port)
    query = {
        "date_from": (day_end - timedelta(days=DAYS)).date().isoformat(),
        "date_to": day_end.date().isoformat(),
        "window_seconds": "1209600",
        "funnel_type": "closed",
        "steps": orjson.dumps(DEMO_STEPS).decode(),
    }
    return DemoResult(
        data_dir=data_dir.resolve(),
        key=key,
        events=len(events),
        users=persons(events),
        query_string=urlencode(query),
        config_path=config_path,
        sink_port=sink_port,
    )
