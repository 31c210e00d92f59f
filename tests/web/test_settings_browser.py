"""The Settings page in real headless Chromium against a `funnels serve` subprocess: creating a key (its
secret shown once), revoking one (its API calls then fail), and the loaded config with its reload."""

from __future__ import annotations

import re

import yaml
from playwright.sync_api import Dialog, Page, expect

from tests.web.conftest import DASHBOARD_CONFIG, Dashboard


def key_row(page: Page, key_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#keys-table tr[data-key-id="{key_id}"]')


def test_create_a_key_see_its_secret_once_then_revoke_it(admin_page: Page, dashboard: Dashboard) -> None:
    page = admin_page
    page.goto(f"{dashboard.url}/settings")
    page.fill('#new-key input[name="name"]', "Warehouse sync")
    page.check('#new-key input[value="query:read"]')
    page.uncheck('#new-key input[value="events:write"]')
    page.click("#new-key >> text=Create key")

    secret_box = page.locator("#new-key-secret")
    expect(secret_box).to_be_visible()
    secret = page.locator("#new-key-value").inner_text()
    match = re.fullmatch(r"fk_([0-9a-f]+)_\S+", secret)
    assert match, secret
    key_id = match.group(1)
    row = key_row(page, key_id)
    expect(row).to_contain_text("Warehouse sync")
    expect(row.locator(".scope")).to_have_text(["query:read"])
    expect(row.locator(".badge")).to_have_text("Active")
    assert dashboard.api("GET", "/v0/funnel", key=secret).status_code == 400  # authorized (no query given)

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dashboard.url)
    page.click("#copy-key")
    expect(page.locator("#copy-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    page.click("#dismiss-key")
    expect(secret_box).to_be_hidden()
    page.reload()
    expect(key_row(page, key_id)).to_contain_text("Warehouse sync")
    assert secret not in page.content()  # shown once: the list never has it

    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    key_row(page, key_id).locator("text=Revoke").click()
    expect(key_row(page, key_id).locator(".badge")).to_have_text("Revoked")
    expect(key_row(page, key_id).locator("button")).to_have_count(0)
    assert dialogs and key_id in dialogs[0]
    response = dashboard.api("GET", "/v0/funnel", key=secret)
    assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHORIZED"


def test_dismissing_the_confirmation_keeps_the_key(admin_page: Page, dashboard: Dashboard) -> None:
    key = dashboard.create_key("events:write", name="Keep me")
    key_id = key[3:].partition("_")[0]
    admin_page.goto(f"{dashboard.url}/settings")
    admin_page.once("dialog", lambda dialog: dialog.dismiss())
    key_row(admin_page, key_id).locator("text=Revoke").click()
    expect(key_row(admin_page, key_id).locator(".badge")).to_have_text("Active")
    assert (
        dashboard.api("POST", "/v0/events", key=key, json={"event": "e", "user_id": "u"}).status_code == 200
    )


def test_a_create_error_is_shown_from_the_envelope(admin_page: Page, dashboard: Dashboard) -> None:
    admin_page.goto(f"{dashboard.url}/settings")
    for box in admin_page.locator('#new-key input[name="scopes"]').all():
        box.uncheck()
    admin_page.click("#new-key >> text=Create key")
    expect(admin_page.locator("#new-key-error")).to_have_text("Choose at least one scope.")
    admin_page.check('#new-key input[value="admin"]')
    admin_page.evaluate("document.querySelector('#new-key input[name=name]').removeAttribute('maxlength')")
    admin_page.fill('#new-key input[name="name"]', "n" * 201)
    admin_page.click("#new-key >> text=Create key")
    error = admin_page.locator("#new-key-error")
    expect(error).to_contain_text("Invalid body.name")
    expect(error.locator("li code")).to_have_text(["body.name"])
    expect(admin_page.locator("#new-key-secret")).to_be_hidden()


def test_the_config_view_shows_the_loaded_config_and_a_failed_reload(
    admin_page: Page, dashboard: Dashboard
) -> None:
    page = admin_page
    config_path = dashboard.config_path
    assert config_path is not None
    page.goto(f"{dashboard.url}/settings")
    expect(page.locator("#config-state")).to_have_text("Valid")
    expect(page.locator("#config-path")).to_have_text(str(config_path))
    expect(page.locator("#config-models .scope")).to_have_text(["customer"])
    expect(page.locator("#config-funnels tbody tr")).to_have_count(1)
    expect(page.locator("#config-funnels tbody")).to_contain_text("onboarding")
    expect(page.locator("#config-funnels tbody .steps li")).to_have_text(["sign_up", "first_query"])
    assert '"id": "onboarding"' in page.locator("#config-json").text_content()  # type: ignore[operator]

    broken = {**DASHBOARD_CONFIG, "funnels": [{"id": "onboarding", "forModels": "nobody", "steps": []}]}
    config_path.write_text(yaml.safe_dump(broken))
    try:
        page.click("#reload-config")
        expect(page.locator("#config-error")).to_contain_text("previous config stays in effect")
        expect(page.locator("#config-state")).to_contain_text("Last reload failed")
        expect(page.locator("#config-problems")).to_contain_text("nobody")
        expect(page.locator("#config-funnels tbody .steps li")).to_have_text(["sign_up", "first_query"])
    finally:
        config_path.write_text(yaml.safe_dump(DASHBOARD_CONFIG, sort_keys=False))
    page.click("#reload-config")
    expect(page.locator("#config-state")).to_have_text("Valid")
    expect(page.locator("#config-error")).to_be_hidden()
    expect(page.locator("#config-problems")).to_be_hidden()
