# The two commands of the README's quickstart. Each does its own set-up first.
SHELL := /bin/bash
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: up test setup check lint typecheck down

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

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

down:
	$(VENV)/bin/morgan down
