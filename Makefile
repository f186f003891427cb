# The two README commands: `make demo` (set up + bake debian12-base locally) and `make test`.
SHELL := /bin/bash
VENV  := .venv/bin
export GOLDEN_HOME ?= /var/lib/golden-image
export AIRFLOW_HOME ?= $(CURDIR)/var/airflow
# The vulnerability gate's data (README "The vulnerability gate"): this machine cannot reach the
# Debian Security Tracker, so the demo and tests use a small file of real entries. Point it at the
# tracker or a mirror of its JSON for real use, e.g.
#   make demo GOLDEN_VULNERABILITY_DATA=https://security-tracker.debian.org/tracker/data/json
export GOLDEN_VULNERABILITY_DATA ?= $(CURDIR)/tests/data/debian-security-tracker.json

.PHONY: setup setup-dev demo bake-web test lint unit bench airflow-ui clean

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh dev

## Bake debian12-base through Airflow; a second `make demo` reports it unchanged and skips.
demo: setup
	$(VENV)/golden validate --deep
	$(VENV)/golden bake debian12-base
	$(VENV)/golden images debian12-base

bake-web: setup
	$(VENV)/golden bake debian12-web

lint: setup-dev
	$(VENV)/ruff check .
	$(VENV)/ruff format --check plugins dags tests benchmarks
	$(VENV)/mypy

unit: setup-dev
	$(VENV)/pytest -q tests/unit

## Everything CI runs: lint, types, unit, integration (real instances) and the end-to-end bake.
test: lint
	scripts/run-tests.sh

bench: setup-dev
	$(VENV)/python benchmarks/run.py

## Airflow UI on http://127.0.0.1:8080 (admin password: var/airflow/simple_auth_manager_passwords.json.generated)
airflow-ui: setup
	scripts/airflow-standalone.sh

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
