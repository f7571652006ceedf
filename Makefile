# The two commands of the README's quickstart. Each does its own set-up first.
SHELL := /bin/bash
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: up test setup check lint typecheck down lock

## make up: set up this machine, then run Morgan's dev stack locally
up: setup
	$(VENV)/bin/morgan up --stack dev

## make test: set up this machine, then run every test (unit, integration, lab)
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

setup:
	scripts/setup

check:
	scripts/setup --check

## make lock: re-resolve every dependency to its newest allowed release, rewrite
## uv.lock and images/lock/, then install the result (the one deliberate upgrade)
lock: setup
	$(VENV)/bin/morgan lock --upgrade
	scripts/setup

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

down:
	$(VENV)/bin/morgan down
