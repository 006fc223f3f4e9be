# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv when it is missing and install into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

HOST     ?= 127.0.0.1
PORT     ?= 5000
DATA_DIR ?= ./var
export HOST PORT DATA_DIR

MODELS ?= htdemucs

.PHONY: run test lint format install models clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

## Start the API and a Celery worker on the embedded default (SQLite, no Redis).
run: $(STAMP)
	$(BIN)/python -m app.embedded

## Lint, then the whole test suite.
test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Fetch model weights into MODELS_DIR ahead of time: make models MODELS="htdemucs htdemucs_ft"
models: $(STAMP)
	$(BIN)/flask --app wsgi models download $(MODELS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
