# Two commands from a fresh clone (Python 3.11+ as python3):
#   make demo   set up, then run the collector on SQLite with a simulated agent
#   make test   set up, then run lint, type checks and every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup clean

$(BIN)/telemetry: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/telemetry

demo: setup
	./scripts/demo.sh

lint: setup
	$(BIN)/ruff check telemetry tests
	$(BIN)/ruff format --check telemetry tests
	$(BIN)/mypy --strict telemetry

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
