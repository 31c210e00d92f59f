"""The Funnels page against the API on the 10M-event benchmark dataset (issue 4: "the Funnels page shows
results for the 10M-event benchmark dataset in about the time the API takes").

A real `funnels serve` over bench/run.py's dataset (10M events, 1M users, imported from its Parquet file,
which is generated first if missing), a `query:read` key, then for the closed 3-step funnel with medians:
- API: `GET /v0/funnel` from this process (httpx), the time to the whole JSON answer;
- page, Run: in headless Chromium (Debian's, via Playwright), signed in, the click on Run until the results
  are rendered (the table's rows are in the page and the results are no longer busy);
- page, open: navigating to `/funnels?<query>` (a bookmark) until the same.
Each is repeated `--repeat` times, interleaved; medians and the spread are printed and written to
bench/data/dashboard.json.

    .venv/bin/python bench/dashboard.py [--events 10000000] [--users 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench.run import BASE, DATA, FUNNEL, generate
from tests.processes import BIN, create_key, free_port, start_server
from tests.web.browser import VIEWPORT, launch

QUERY = {**BASE, "steps": orjson.dumps(FUNNEL).decode()}
RESULTS_READY = (
    "() => { const r = document.querySelector('#results');"
    " return r && !r.hasAttribute('aria-busy') && document.querySelectorAll('tr[data-step]').length > 0; }"
)


def load(events: int, users: int, data_dir: Path) -> None:
    """bench/run.py's dataset imported into `data_dir` (kept between runs: the import takes a while)."""
    source = DATA / f"events-{events}-{users}.parquet"
    if not source.exists():
        generate(source, events, users)
    marker = data_dir / f"loaded-{events}-{users}"
    if marker.exists():
        return
    shutil.rmtree(data_dir, ignore_errors=True)
    result = subprocess.run(
        [str(BIN), "import", str(source), "--data-dir", str(data_dir)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"import failed: {result.stderr}")
    marker.touch()


def wait_ready(page: Page) -> None:
    page.wait_for_function(RESULTS_READY, polling=5, timeout=120_000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    data_dir = DATA / "dir-dashboard"
    started = time.perf_counter()
    load(args.events, args.users, data_dir)
    print(f"dataset ready in {time.perf_counter() - started:.0f}s", flush=True)
    key = create_key(data_dir, "query:read")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(data_dir, port)  # its output goes to bench/data/server.log
    api_s: list[float] = []
    run_s: list[float] = []
    open_s: list[float] = []
    try:
        bookmark = f"{url}/funnels?{urlencode(QUERY)}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:

            def api() -> float:
                begun = time.perf_counter()
                answer = client.get("/v0/funnel", params=QUERY)
                answer.raise_for_status()
                return time.perf_counter() - begun

            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(f"{url}/login")
                page.fill('input[name="key"]', key)
                page.click('button[type="submit"]')
                page.wait_for_url("**/funnels**")
                page.goto(bookmark)  # one untimed round of each: caches warm, as on a running server
                wait_ready(page)
                api()
                for _ in range(args.repeat):  # interleaved, so background load hits all three alike
                    api_s.append(api())
                    begun = time.perf_counter()
                    page.click("#run")
                    wait_ready(page)
                    run_s.append(time.perf_counter() - begun)
                    begun = time.perf_counter()
                    page.goto(bookmark)
                    wait_ready(page)
                    open_s.append(time.perf_counter() - begun)
                rows = page.eval_on_selector_all("tr[data-step]", "rows => rows.map(r => +r.dataset.users)")
                browser.close()
            expected = [row["users"] for row in client.get("/v0/funnel", params=QUERY).json()["data"]]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
    assert rows == expected, (rows, expected)  # the page showed the API's numbers

    def ms(values: list[float]) -> dict[str, int]:
        return {
            "median": round(statistics.median(values) * 1000),
            "min": round(min(values) * 1000),
            "max": round(max(values) * 1000),
        }

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "events": args.events,
        "users": args.users,
        "repeat": args.repeat,
        "users_per_step": expected,
        "api_ms": ms(api_s),
        "page_run_ms": ms(run_s),
        "page_open_ms": ms(open_s),
    }
    (DATA / "dashboard.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(
        f"\nGET /v0/funnel {results['api_ms']['median']} ms; Funnels page: Run → rendered "
        f"{results['page_run_ms']['median']} ms, open a bookmark → rendered {results['page_open_ms']['median']} ms "
        f"(medians of {args.repeat})"
    )


if __name__ == "__main__":
    main()
