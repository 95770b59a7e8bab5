# The two commands of README.md: `make up` runs the system, `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: up test lint venv services

venv:
	@scripts/ensure-venv.sh

services:
	@scripts/services.sh

## Run the whole system on defaults: database, migrations, simulated fleet, ingest, API.
up: venv services
	@$(VENV)/python -m cli up

## Run the linters and the whole test suite against the real PostgreSQL and Mosquitto.
test: venv services
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/ruff check --fix .
	$(VENV)/ruff format .
