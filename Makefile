# Each verb sets itself up: a fresh clone needs only Python 3.10/3.11 and network access
# to the package registry. CI runs `make test` (see .ci/run).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.mlstack-installed
export DAGSTER_HOME ?= $(CURDIR)/.mlstack/dagster_home
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: setup run test test-fast dev bench bench-peers airbyte-setup browser lint lock clean \
	bigquery-emulator bigquery-emulator-serve

# --compile-bytecode: every `dagster`, `dbt` and test process would otherwise compile its
# imports from source when PYTHONDONTWRITEBYTECODE is set (as here and in many containers).
$(INSTALLED): pyproject.toml setup.py requirements-lock.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.5,<0.9"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements-lock.txt -e ".[test,bench]"
	touch $@

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp deploy/dagster.yaml $@

# Python packages, the Dagster instance, the Airbyte connector and the dbt manifest.
setup: $(INSTALLED) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m mlstack_assets.ingestion.connector
	$(BIN)/python -m mlstack_assets.transform.project

run: setup
	$(BIN)/mlstack run

test: setup browser bigquery-emulator bench-peers
	$(BIN)/pytest

# The unit tests (tests/unit/): pure pieces and the compat fence, no run, no server; under
# a minute here. `make test` runs them and tests/integration/.
test-fast: setup
	$(BIN)/pytest tests/unit

# The browser test drives Debian's Chromium (Playwright's own browser downloads are not
# reachable here). Installed when missing; with CI set, a failed install fails the target
# (elsewhere that one test is skipped, with a warning).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	} || { \
	  if [ -n "$$CI" ] && [ "$$CI" != "false" ] && [ "$$CI" != "0" ]; then \
	    echo "error: chromium could not be installed, and CI must run the browser test" >&2; exit 1; \
	  fi; \
	  echo "warning: chromium could not be installed; the browser test will be skipped"; \
	}

# The BigQuery emulator (bqemulator, REST + gRPC over DuckDB) for the BigQuery tests and the
# local BigQuery demo. Its own virtualenv: it needs cryptography>=46 and its own DuckDB.
# DuckDB's extension site is not reachable, so its spatial extension (which the emulator
# loads at start) comes from the duckdb-extension-spatial package of the same DuckDB
# version, installed into the venv's own DuckDB home (`$(BQEMU_VENV)/home`).
# Idempotent: the marker names the versions, so only a version change reinstalls.
BQEMU_VERSION := 1.4.0
BQEMU_DUCKDB := 1.5.5
BQEMU_VENV := .mlstack/bqemulator-venv
BQEMU_INSTALLED := $(BQEMU_VENV)/.installed-$(BQEMU_VERSION)-duckdb-$(BQEMU_DUCKDB)
# bqemulator needs Python >= 3.11.
BQEMU_PYTHON ?= $(PYTHON)

$(BQEMU_INSTALLED): | $(INSTALLED)
	rm -rf $(BQEMU_VENV)
	$(BIN)/uv venv --quiet --python $(BQEMU_PYTHON) $(BQEMU_VENV)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BQEMU_VENV)/bin/python \
	  bqemulator==$(BQEMU_VERSION) numpy duckdb==$(BQEMU_DUCKDB) duckdb-extension-spatial==$(BQEMU_DUCKDB)
	mkdir -p $(BQEMU_VENV)/home
	HOME=$(CURDIR)/$(BQEMU_VENV)/home $(BQEMU_VENV)/bin/python -c "import duckdb, duckdb_extension_spatial as s, pathlib; \
	  [ext] = pathlib.Path(s.__file__).parent.glob('extensions/*/spatial.duckdb_extension'); \
	  con = duckdb.connect(); con.execute(f\"INSTALL '{ext}'\"); con.execute('LOAD spatial')"
	touch $@

bigquery-emulator: $(BQEMU_INSTALLED)

# Local demo of the production warehouse: the emulator on 127.0.0.1:9050 (until Ctrl-C);
# it writes .mlstack/bqemulator/env, to source before `make run` (docs/production.md).
bigquery-emulator-serve: setup bigquery-emulator
	$(BIN)/python -m tests.support.bigquery_emulator --port $${BQEMU_PORT:-9050}


# `dg dev`: the webserver and the daemon (sensors, schedules, freshness, alerts). dg expects
# the project's virtualenv to be the active one.
dev: setup
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg dev --host $(HOST) --port $(PORT)

# The benchmark's peers, each in a virtualenv of its own (their pins are not mlstack's):
# dlt loading the CSVs into DuckDB with its filesystem source (dlt 1.31 needs DuckDB 1.5:
# it calls a cursor method DuckDB 2 removed), and sling, whose Linux binary comes in a
# registry wheel and whose DuckDB target drives the `duckdb` CLI (from duckdb-cli, with
# its json and httpfs extensions from the registry installed into the venv's own home,
# since DuckDB's extension site is not reachable).
PEERS := .mlstack/peers
DLT_VERSION := 1.31.0
SLING_VERSION := 1.4.11
PEERS_DUCKDB := 1.5.5
PEERS_INSTALLED := $(PEERS)/.installed-dlt-$(DLT_VERSION)-sling-$(SLING_VERSION)-duckdb-$(PEERS_DUCKDB)

$(PEERS_INSTALLED): | $(INSTALLED)
	rm -rf $(PEERS)
	$(BIN)/uv venv --quiet --python $(PYTHON) $(PEERS)/dlt
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(PEERS)/dlt/bin/python \
	  "dlt[duckdb,filesystem]==$(DLT_VERSION)" duckdb==$(PEERS_DUCKDB)
	$(BIN)/uv venv --quiet --python $(PYTHON) $(PEERS)/sling
	$(BIN)/uv pip install --quiet --python $(PEERS)/sling/bin/python sling==$(SLING_VERSION) \
	  sling-linux-amd64==$(SLING_VERSION) duckdb-cli==$(PEERS_DUCKDB) \
	  duckdb-extension-json==$(PEERS_DUCKDB) duckdb-extension-httpfs==$(PEERS_DUCKDB)
	mkdir -p $(PEERS)/sling/home
	for ext in json httpfs; do \
	  file=$$(ls $(PEERS)/sling/lib/python*/site-packages/duckdb_extension_$$ext/extensions/v$(PEERS_DUCKDB)/$$ext.duckdb_extension); \
	  HOME=$(CURDIR)/$(PEERS)/sling/home $(PEERS)/sling/bin/duckdb -c "INSTALL '$(CURDIR)/$$file'"; \
	done
	touch $@

bench-peers: $(PEERS_INSTALLED)

# Sizes: BENCH_SIZES=1000,100000,1000000 make bench (1M takes about ten minutes here).
BENCH_SIZES ?= 1000,100000
bench: setup bigquery-emulator bench-peers
	$(BIN)/python -m benchmarks.run --sizes $(BENCH_SIZES)

# Airbyte server or Cloud: create/update the lesson's sources, destination and connections.
airbyte-setup: $(INSTALLED)
	$(BIN)/mlstack airbyte-setup

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Re-pin requirements-lock.txt after changing the ranges in pyproject.toml.
lock: $(INSTALLED)
	$(BIN)/uv pip compile pyproject.toml --extra test --extra bench --python-version 3.11 --quiet -o requirements-lock.txt

clean:
	rm -rf $(VENV) .mlstack dbt_project/target dbt_project/logs
