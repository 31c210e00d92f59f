# One task runner: CI calls `make test` unchanged (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
# The dashboard's browser tests drive Debian's Chromium (never a browser Playwright downloads).
CHROMIUM := /usr/bin/chromium
# Front-end libraries come from the npm registry, pinned by package-lock.json, and are served from the
# package itself (no CDN): `npm ci` into node_modules/, then the files the pages load are copied here.
VENDOR := src/funnels/web/static/vendor
CHART := $(VENDOR)/chart.umd.js
# analytics.js (Segment's standalone build, with the chunks it loads on demand), served to other sites at
# the paths Segment's snippet loads (web/analytics_js.py).
ANALYTICS_JS := $(VENDOR)/analytics-next/standalone.js
ANALYTICS_NEXT := node_modules/@segment/analytics-next
NODE_STAMP := node_modules/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600

# The suites that run a second time with the state store on PostgreSQL (127.0.0.1:5432, tests/postgres.py):
# only their tests whose store is the `services` fixture's (tests/conftest.py); the store's own modules run
# on both dialects in the first pass.
POSTGRES_SUITES := tests/ingest tests/automation tests/test_auth.py tests/test_sessions.py tests/api/test_keys.py \
	tests/api/test_idempotency.py tests/api/test_automation.py tests/api/test_segment.py tests/api/test_events.py

# The suites that run a third time with the event store on the ClickHouse-server backend, through
# clickhouse-connect's embedded chDB interface (no server can be installed here; tests/store/test_server_events.py
# runs against a real one when FUNNELS_TEST_CLICKHOUSE_URL is set).
SERVER_EVENTS_SUITES := tests/analytics

# Tests keep their temporary directories (data directories, stores, the browser's profile) on tmpfs where the
# machine has one: chDB writes a part per insert and SQLite syncs per commit, file operations that cost this
# disk a third of `make test-fast`'s system time (docs/benchmarks.md, "The test suite"). pytest still numbers
# its base directories there, so concurrent runs do not share one.
TEST_TMPDIR := $(shell [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm || echo $${TMPDIR:-/tmp})
# Python may write its bytecode caches while tests run ($PYTHONDONTWRITEBYTECODE is set on the workplace's
# machines): otherwise every worker compiles the package and pytest rewrites every test module's asserts
# again at each start, ~9 s per process (collection 17.2 s → 8.8 s).
unexport PYTHONDONTWRITEBYTECODE
# One worker per core (`-n auto`), a test file per worker: the fuzz tests' "reached the SQL path" checks run
# after their fuzz test, in the same process.
PYTEST := TMPDIR=$(TEST_TMPDIR) $(BIN)/python -m pytest -n auto --dist loadfile

.PHONY: install demo test test-fast lint bench screenshots clean

install: $(STAMP) $(CHART) $(ANALYTICS_JS) $(CHROMIUM)

# Re-install only when the dependency pins or the package metadata change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# One `npm ci` for every vendored file (and for the tests' Node SDK, tests/api/analytics_node.mjs).
$(NODE_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(CHART): $(NODE_STAMP)
	mkdir -p $(VENDOR)
	cp node_modules/chart.js/dist/chart.umd.js $(CHART)
	cp node_modules/chart.js/LICENSE.md $(VENDOR)/chart.js.LICENSE.md

$(ANALYTICS_JS): $(NODE_STAMP)
	rm -rf $(VENDOR)/analytics-next
	mkdir -p $(VENDOR)/analytics-next
	cp $(ANALYTICS_NEXT)/dist/umd/*.bundle.*.js $(ANALYTICS_NEXT)/LICENSE.MD $(VENDOR)/analytics-next/
	cp $(ANALYTICS_NEXT)/dist/umd/standalone.js $(ANALYTICS_JS)

# Only when missing; the package lists are refreshed only when apt cannot install from the ones it has.
$(CHROMIUM):
	$(APT_GET) install -y --no-install-recommends chromium \
		|| { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium; }

demo: install
	$(BIN)/funnels demo --port $(PORT)

test: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(PYTEST)
	FUNNELS_TEST_STATE=postgresql $(PYTEST) $(POSTGRES_SUITES)
	FUNNELS_TEST_EVENTS=clickhouse-connect $(PYTEST) $(SERVER_EVENTS_SUITES)

# The inner loop: every test but the slow, process and browser ones (markers: pyproject.toml), on one worker
# per core; a test that starts a subprocess without its marker fails here. CI runs `make test`: everything.
test-fast: install
	FUNNELS_TEST_FAST=1 $(PYTEST) -m "not slow and not process and not browser"

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/automation.py
	$(BIN)/python bench/dashboard.py

screenshots: install
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) .funnels .pytest_cache .hypothesis node_modules $(VENDOR)
