"""analytics.js served from the package (`web/analytics_js.py`), in process: the standalone build at the path
Segment's snippet loads, its chunks, and what is refused. The real SDK in a browser:
`test_analytics_js_browser.py`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from funnels.web.analytics_js import BUILD_DIR, STANDALONE


def test_the_vendored_build_is_installed() -> None:
    chunks = sorted(path.name for path in BUILD_DIR.glob("*.bundle.*.js"))
    assert (BUILD_DIR / STANDALONE).is_file() and (BUILD_DIR / "LICENSE.MD").is_file()
    assert any(name.startswith("auto-track.bundle.") for name in chunks)


def test_the_snippet_path_serves_the_standalone_build_for_any_key(client: TestClient) -> None:
    expected = (BUILD_DIR / STANDALONE).read_bytes()
    for key in ("fk_0123456789ab_secret", "anything"):
        response = client.get(f"/analytics.js/v1/{key}/analytics.min.js")
        assert response.status_code == 200
        assert response.content == expected
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert response.headers["cache-control"] == "public, max-age=300"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in response.headers  # a script tag needs no CORS


def test_chunks_are_served_by_their_hashed_names(client: TestClient) -> None:
    for path in BUILD_DIR.glob("*.bundle.*.js"):
        response = client.get(f"/analytics-next/bundles/{path.name}")
        assert response.status_code == 200 and response.content == path.read_bytes()
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(
    "name",
    ["standalone.js", "LICENSE.MD", "..%2F..%2Fapp.py", "auto-track.bundle.0000.js", "x.bundle.abc.js.map"],
)
def test_anything_else_under_bundles_is_a_404_in_the_envelope(client: TestClient, name: str) -> None:
    response = client.get(f"/analytics-next/bundles/{name}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_other_builds_on_the_snippet_path_are_not_served(client: TestClient) -> None:
    # analytics.js asks for analytics.classic.js after a CSP refusal: there is none here
    assert client.get("/analytics.js/v1/k/analytics.classic.js").status_code == 404
