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

.PHONY: setup run test dev bench airbyte-setup browser lint lock clean

# --compile-bytecode: every `dagster`, `dbt` and test process would otherwise compile its
# imports from source when PYTHONDONTWRITEBYTECODE is set (as here and in many containers).
$(INSTALLED): pyproject.toml setup.py requirements-lock.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.5,<0.9"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements-lock.txt -e ".[test]"
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Python packages, the Dagster instance, the Airbyte connector and the dbt manifest.
setup: $(INSTALLED) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m mlstack_assets.ingestion.connector
	$(BIN)/python -m mlstack_assets.transform.project

run: setup
	$(BIN)/mlstack run

test: setup browser
	$(BIN)/pytest

# The browser test drives Debian's Chromium (Playwright's own browser downloads are not
# reachable here). Installed when missing; without it that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	} || echo "warning: chromium could not be installed; the browser test will be skipped"

# `dg dev`: the webserver and the daemon (sensors, schedules, freshness, alerts). dg expects
# the project's virtualenv to be the active one.
dev: setup
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg dev --host $(HOST) --port $(PORT)

# Sizes: BENCH_SIZES=1000,100000,1000000 make bench (1M takes about ten minutes here).
BENCH_SIZES ?= 1000,100000
bench: setup
	$(BIN)/python -m benchmarks.run --sizes $(BENCH_SIZES)

# Airbyte server or Cloud: create/update the lesson's sources, destination and connections.
airbyte-setup: $(INSTALLED)
	$(BIN)/mlstack airbyte-setup

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Re-pin requirements-lock.txt after changing the ranges in pyproject.toml.
lock: $(INSTALLED)
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 --quiet -o requirements-lock.txt

clean:
	rm -rf $(VENV) .mlstack dbt_project/target dbt_project/logs
