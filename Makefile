PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: the whole platform on http://127.0.0.1:8000/ (Ctrl-C stops it)
run: $(STAMP)
	$(BIN)/python -m swrly.devstack

## make test: lint, format check, migrations check, and the test suite
test: $(STAMP) lint
	$(BIN)/python manage.py makemigrations --check --dry-run --skip-checks
	$(BIN)/pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
