"""The dashboard's HTML routes over the ASGI app: sign-in and sign-out, the session cookie's flags, expiry
on the injected clock, scope-based pages and nav, CSRF on the forms, and no 5xx for any form input."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.auth import create_key, key_id_of, revoke_key
from funnels.clock import ManualClock
from funnels.services import Services
from funnels.sessions import SESSION_COOKIE, SESSION_TTL_MS
from funnels.web import render
from funnels.web.pages import PAGES
from funnels.web.routes import LOGIN_CSRF_COOKIE
from tests.web.conftest import csrf_token, form_csrf, sign_in

PAGE_PATHS = [page.path for page in PAGES]


def nav(html: str) -> list[str]:
    block = re.search(r'<nav class="nav"[^>]*>(.*?)</nav>', html, re.S)
    return re.findall(r'<a href="([^"]+)"', block.group(1)) if block else []


def set_cookie(response_headers: list[str], name: str) -> str:
    [header] = [value for value in response_headers if value.startswith(f"{name}=")]
    return header


def test_signed_out_pages_go_to_the_sign_in_form_and_come_back(
    client: TestClient, keys: dict[str, str]
) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    for path in PAGE_PATHS:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == f"/login?next={path}"
    with_query = client.get("/settings?tab=keys&x=1", follow_redirects=False).headers["location"]
    assert with_query == "/login?next=/settings%3Ftab%3Dkeys%26x%3D1"
    signed_in = sign_in(client, keys["admin"], next="/settings?tab=keys&x=1")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/settings?tab=keys&x=1"
    # `/` keeps its query string (funnels demo's link) on the way to the first page
    assert client.get("/?steps=%5B%5D", follow_redirects=False).headers["location"] == "/funnels?steps=%5B%5D"
    assert client.get("/login?next=/people", follow_redirects=False).headers["location"] == "/people"


def test_sign_in_sets_a_strict_http_only_session_cookie(client: TestClient, keys: dict[str, str]) -> None:
    form = client.get("/login")
    assert form.status_code == 200 and 'name="key"' in form.text and 'type="password"' in form.text
    login_cookie = set_cookie(form.headers.get_list("set-cookie"), LOGIN_CSRF_COOKIE).lower()
    assert "httponly" in login_cookie and "samesite=strict" in login_cookie and "path=/login" in login_cookie
    response = sign_in(client, keys["admin"])
    assert response.status_code == 303 and response.headers["location"] == "/funnels"
    cookie = set_cookie(response.headers.get_list("set-cookie"), SESSION_COOKIE)
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert {"httponly", "samesite=strict", "path=/", f"max-age={SESSION_TTL_MS // 1000}"} <= set(flags)
    assert "secure" not in flags  # plain http here; see the https test
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 40 and token not in client.get("/settings").text


def test_the_cookie_is_secure_over_https(services: Services, keys: dict[str, str]) -> None:
    with TestClient(create_app(services, run_shipper=False), base_url="https://testserver") as secure:
        response = sign_in(secure, keys["admin"])
        assert response.status_code == 303
        flags = set_cookie(response.headers.get_list("set-cookie"), SESSION_COOKIE).lower().split("; ")
        assert "secure" in flags


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        ("fk_nope_nope", 401, "unknown or revoked"),
        ("", 400, "Enter an API key"),
        ("events:write", 403, "needs the query:read or admin scope"),
    ],
)
def test_a_failed_sign_in_shows_the_form_again(
    client: TestClient, keys: dict[str, str], key: str, status: int, message: str
) -> None:
    response = sign_in(client, keys.get(key, key))
    assert response.status_code == status
    assert message in response.text and 'name="key"' in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert client.get("/settings", follow_redirects=False).status_code == 303


def test_the_sign_in_form_needs_its_csrf_token(client: TestClient, keys: dict[str, str]) -> None:
    """Another site cannot sign a browser in with its own key: the form must echo the form's cookie."""
    client.get("/login")
    for token in ("", "forged-token-forged-token"):
        response = client.post(
            "/login", data={"key": keys["admin"], "csrf_token": token}, follow_redirects=False
        )
        assert response.status_code == 400 and "expired" in response.text
    client.cookies.clear()
    response = client.post(
        "/login", data={"key": keys["admin"], "csrf_token": "x" * 43}, follow_redirects=False
    )
    assert response.status_code == 400
    assert sign_in(client, keys["admin"]).status_code == 303  # the re-rendered form works


@pytest.mark.parametrize(
    "next", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/login", "settings"]
)
def test_sign_in_only_returns_to_this_server(client: TestClient, keys: dict[str, str], next: str) -> None:
    assert sign_in(client, keys["admin"], next=next).headers["location"] == "/funnels"


def test_malformed_forms_are_400_not_5xx(client: TestClient) -> None:
    client.get("/login")
    bodies = [
        (
            b'--x\r\nContent-Disposition: form-data; name="key"\r\n\r\nfk\r\n',
            "multipart/form-data; boundary=x",
        ),
        (b"garbage", "multipart/form-data"),
        ("&".join(f"f{i}=v" for i in range(100)).encode(), "application/x-www-form-urlencoded"),
        (b"\xff\xfe=\xff", "application/x-www-form-urlencoded"),
        (b'{"key": "fk_x"}', "application/json"),
    ]
    for path in ("/login", "/logout"):
        for body, content_type in bodies:
            response = client.post(
                path, content=body, headers={"Content-Type": content_type}, follow_redirects=False
            )
            assert response.status_code < 500, (path, body, response.text)


def test_pages_and_nav_follow_the_keys_scopes(client: TestClient, keys: dict[str, str]) -> None:
    sign_in(client, keys["query:read"])
    funnels = client.get("/funnels")
    assert funnels.status_code == 200 and "<h1>Funnels</h1>" in funnels.text
    assert nav(funnels.text) == ["/funnels"]
    for path in ("/people", "/deliveries", "/settings"):
        response = client.get(path)
        assert response.status_code == 403
        assert "needs an API key with the admin scope" in response.text and "query:read" in response.text
        assert nav(response.text) == ["/funnels"]
    client.cookies.clear()
    sign_in(client, keys["admin"])
    for page in PAGES:
        response = client.get(page.path)
        assert response.status_code == 200, page.path
        assert f"<h1>{page.title}</h1>" in response.text and page.summary in response.text
        assert nav(response.text) == PAGE_PATHS
        assert f'<a href="{page.path}" aria-current="page">' in response.text
    settings = client.get("/settings").text
    assert all(f'value="{scope}"' in settings for scope in ("events:write", "query:read", "admin"))


def test_pages_carry_the_session_and_strict_headers(client: TestClient, keys: dict[str, str]) -> None:
    sign_in(client, keys["admin"])
    response = client.get("/settings")
    token = csrf_token(client, "/settings")
    assert f'name="csrf_token" value="{token}"' in response.text  # the sign-out form
    assert f'data-key-id="{key_id_of(keys["admin"])}"' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text and " style=" not in response.text  # the CSP allows neither


def test_template_values_are_escaped(services: Services, client: TestClient, clock: ManualClock) -> None:
    key = create_key(services.state, clock, ["admin"], name='<img src=x onerror="alert(1)">')
    sign_in(client, key)
    html = client.get("/settings").text
    assert "<img src=x" not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html


def test_sign_out_needs_the_csrf_token_and_ends_the_session(client: TestClient, keys: dict[str, str]) -> None:
    sign_in(client, keys["admin"])
    token = csrf_token(client)
    refused = client.post("/logout", data={"csrf_token": "forged"}, follow_redirects=False)
    assert refused.status_code == 403 and "Not signed out" in refused.text
    assert client.get("/settings").status_code == 200
    cookie = client.cookies[SESSION_COOKIE]
    response = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert SESSION_COOKIE not in client.cookies
    client.cookies.set(SESSION_COOKIE, cookie)  # the old cookie, replayed, opens nothing
    assert client.get("/settings", follow_redirects=False).status_code == 303
    assert client.get("/v0/keys").status_code == 401
    assert client.post("/logout", follow_redirects=False).headers["location"] == "/login"  # signed out: no-op


def test_sessions_expire_on_the_injected_clock(
    client: TestClient, keys: dict[str, str], clock: ManualClock
) -> None:
    sign_in(client, keys["admin"])
    clock.advance(SESSION_TTL_MS - 1)
    assert client.get("/settings", follow_redirects=False).status_code == 200
    clock.advance(1)
    response = client.get("/settings", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/settings"
    assert form_csrf(client.get("/login").text)  # the form again, not a redirect loop


def test_a_revoked_key_ends_its_session(
    services: Services, client: TestClient, keys: dict[str, str], clock: ManualClock
) -> None:
    key = create_key(services.state, clock, ["admin"])
    sign_in(client, key)
    assert client.get("/settings", follow_redirects=False).status_code == 200
    revoke_key(services.state, clock, key_id_of(key))
    assert client.get("/settings", follow_redirects=False).status_code == 303
    assert sign_in(client, key).status_code == 401


def test_chart_js_is_loaded_where_charts_are_and_missing_is_a_note(
    client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(client, keys["admin"])
    funnels = client.get("/funnels").text
    assert "/static/vendor/chart.umd.js?v=" in funnels and "data-chart-missing" not in funnels
    assert "chart.umd.js" not in client.get("/settings").text
    library = client.get("/static/vendor/chart.umd.js")
    assert library.status_code == 200 and "Chart.js" in library.text[:500]
    monkeypatch.setattr(render, "CHART_JS", "vendor/not-installed.js")
    funnels = client.get("/funnels")
    assert funnels.status_code == 200
    assert "data-chart-missing" in funnels.text and "chart.umd.js?v=" not in funnels.text


def test_static_files_are_served(client: TestClient) -> None:
    for name, kind in (("app.js", "javascript"), ("settings.js", "javascript"), ("app.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/../pages.py").status_code == 404
