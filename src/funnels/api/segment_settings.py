"""What analytics.js asks of Segment's hosts besides ingestion, answered here so it needs none of them:
`GET /v1/projects/{writeKey}/settings` (Segment's CDN) and `POST /v1/m` (its usage metrics).

How it works: analytics.js loads its settings from `{cdn}/v1/projects/{writeKey}/settings` (`{cdn}` is the
snippet's `_cdn`, else the host its script came from). Its `Segment.io` integration sends each event to
`{protocol}://{apiHost}/{t,p,i,…}` with `apiKey` as the HTTP Basic username, so the settings name this
server's `/v1` and echo the path's key; `metrics.sampleRate: 0` turns off the usage counters it would post
to api.segment.io every 30 s (their `host` is this server too, for a page that turns them on again in its
load options); no other integration and no remote plugin is listed, so it loads nothing else. The host is
`--public-url` when set; else the request's own scheme and `Host` (behind a TLS-terminating proxy set
`--public-url`, or the settings would say `http`).

Any key gets the same settings, valid or not, and the key store is not read: the answer reveals nothing
about the key (no oracle for guessing keys), costs no state-store read per page view, and keeps
analytics.js loading. A 404 would make analytics.js fail to load, and on that failure it posts an error
metric to api.segment.io, which is the very request this endpoint exists to prevent. An unknown or revoked
key is refused where it matters, on the events themselves (401 on `/v1/t`…).

`POST /v1/m` answers 204 without reading the body (analytics.js sends no key with its metrics, and nothing is
done with them), so it buffers nothing and touches no store.
"""

from __future__ import annotations

from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from funnels.api.schemas import SegmentSettings, documented

router = APIRouter(tags=["Segment"])

MAX_WRITE_KEY_CHARS: Final[int] = 256
# Analytics.js caches nothing itself; a browser may reuse the settings for a minute. Settings built from the
# request's Host header (no --public-url) are for that browser only: a shared cache that does not key on Host
# must not hand one client's Host to another.
SETTINGS_CACHE: Final[str] = "public, max-age=60"
SETTINGS_CACHE_FROM_HOST: Final[str] = "private, max-age=60"

WriteKey = Annotated[
    str,
    Path(
        alias="writeKey",
        min_length=1,
        max_length=MAX_WRITE_KEY_CHARS,
        description="A funnels key with `events:write` (not checked here: any key gets the same settings)",
    ),
]


def api_host(request: Request) -> tuple[str, str, bool]:
    """This server's `/v1` as analytics.js wants it: (`host[:port][/path]/v1`, `http` or `https`, whether it
    came from the request's Host header rather than `--public-url`)."""
    public_url = getattr(request.app.state, "public_url", None)
    if public_url:
        parts = urlsplit(public_url)
        return f"{parts.netloc}{parts.path.rstrip('/')}/v1", parts.scheme, False
    base = request.base_url
    return f"{base.netloc}{base.path.rstrip('/')}/v1", base.scheme, True


def segment_settings(write_key: str, host: str, protocol: str) -> dict[str, Any]:
    """The settings object that points analytics.js at `host` (see the module docstring)."""
    return {
        "integrations": {"Segment.io": {"apiKey": write_key, "apiHost": host, "protocol": protocol}},
        "metrics": {"sampleRate": 0, "host": host},
        "remotePlugins": [],
    }


@router.get(
    "/v1/projects/{writeKey}/settings",
    summary="analytics.js settings (instead of Segment's CDN)",
    description=(
        "The settings analytics.js loads before anything else, pointing its Segment.io integration at this "
        "server's `/v1` with the path's key and turning off its usage metrics. Any key gets the same "
        "answer: the key is checked where events are sent. No auth; CORS from `--cors-origins`."
    ),
    **documented(SegmentSettings, (400,)),
)
async def settings(request: Request, write_key: WriteKey) -> JSONResponse:
    host, protocol, from_request = api_host(request)
    cache = SETTINGS_CACHE_FROM_HOST if from_request else SETTINGS_CACHE
    return JSONResponse(segment_settings(write_key, host, protocol), headers={"Cache-Control": cache})


@router.post(
    "/v1/m",
    summary="analytics.js usage metrics (accepted, not kept)",
    description=(
        "Where analytics.js posts its usage counters when a page turns them on. Answered 204 at once: the "
        "body is not read, nothing is stored or counted. No auth (the SDK sends none)."
    ),
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Accepted and dropped"}},
)
async def metrics() -> Response:
    return Response(status_code=204)
