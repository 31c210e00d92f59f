"""Launching Debian's headless Chromium (/usr/bin/chromium) with Playwright: shared by the browser tests and
`scripts/screenshots.py`. Playwright's own browser downloads are never used."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Playwright

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
# No background traffic: this machine's network is closed, and Chromium would retry its update and sync
# hosts; --no-sandbox because the tests may run as root.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def launch(playwright: Playwright) -> Browser:
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make install` installs Debian's chromium package")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
