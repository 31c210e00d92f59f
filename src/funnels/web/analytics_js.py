"""analytics.js for other sites, from the package itself: `GET /analytics.js/v1/{writeKey}/analytics.min.js`
(the path Segment's snippet loads, so the snippet works with only its host changed) and the chunks it loads
on demand, `GET /analytics-next/bundles/{name}`.

The build is @segment/analytics-next's standalone build, pinned in package-lock.json and copied into
`static/vendor/analytics-next/` by `make install` (like Chart.js). Every key gets the same file: the
standalone build reads the key from the snippet (`analytics._writeKey`), and the key is checked where events
arrive. The chunks (auto-track for `trackLink`/`trackForm`, the query-string reader for `?ajs_` links, …) are
loaded from `{cdn}/analytics-next/bundles/`, `{cdn}` being the snippet's `_cdn` or the script's host: this
server. Script tags load them, which needs no CORS. The settings analytics.js fetches next are
`api/segment_settings.py`'s.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from fastapi import APIRouter
from starlette.responses import FileResponse

from funnels.api.errors import ApiError

router = APIRouter(include_in_schema=False)

BUILD_DIR: Final[Path] = Path(__file__).parent / "static" / "vendor" / "analytics-next"
STANDALONE: Final[str] = "standalone.js"
CHUNK_NAME: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9_-]+\.bundle\.[0-9a-f]+\.js")
JAVASCRIPT: Final[str] = "text/javascript; charset=utf-8"
# The script's name stays the same from one release to the next: a browser checks again after 5 minutes.
# A chunk's name carries its content's hash: it never changes.
SCRIPT_CACHE: Final[str] = "public, max-age=300"
CHUNK_CACHE: Final[str] = "public, max-age=31536000, immutable"


def build_file(name: str, cache: str) -> FileResponse:
    """A file of the vendored build, or 404 when the build is not installed."""
    path = BUILD_DIR / name
    if not path.is_file():
        raise ApiError(
            "NOT_FOUND",
            f"analytics.js is not installed in this package ({name} is missing): `make install` copies it.",
        )
    headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=JAVASCRIPT, headers=headers)


@router.get("/analytics.js/v1/{write_key}/analytics.min.js")
async def analytics_min_js(write_key: str) -> FileResponse:
    return build_file(STANDALONE, SCRIPT_CACHE)


@router.get("/analytics-next/bundles/{name}")
async def analytics_chunk(name: str) -> FileResponse:
    if not CHUNK_NAME.fullmatch(name):
        raise ApiError("NOT_FOUND", f"No analytics.js chunk is called {name!r}.")
    return build_file(name, CHUNK_CACHE)
