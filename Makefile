# Two commands from a fresh clone (Python 3.11+ as python3, root for the system packages):
#   make demo   set up, then run the collector on SQLite with a simulated agent
#   make test   set up, then run everything CI runs: lint, types, every test, the container check
# Quicker loops while working: make unit (unit tests, about 30 s), make pytest, make lint,
# make container-check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test pytest unit lint setup system-deps container-check clean

$(BIN)/telemetry: pyproject.toml examples/telemetry-sink-example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# The distribution was called `telemetry` (an unrelated project on PyPI) before it was
	@# `sensor-telemetry`: drop a venv's old copy, which owns the same package and command.
	$(BIN)/python -m pip uninstall --quiet --yes telemetry 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[dev,all]'
	$(BIN)/python -m pip install --quiet -e examples/telemetry-sink-example
	touch $@

setup: $(BIN)/telemetry

# Headless Chromium for the live view's browser test; nats-server for the relay's 3-node
# cluster tests, which start their own nodes (Debian packages).
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  $(SUDO) apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium chromium-driver; }
	@command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  $(SUDO) apt-get install -y -qq -o DPkg::Lock::Timeout=300 nats-server; }

demo: setup
	./scripts/demo.sh

lint: setup
	$(BIN)/ruff check telemetry tests benchmarks
	$(BIN)/ruff format --check telemetry tests benchmarks
	$(BIN)/mypy --strict telemetry

pytest: setup system-deps
	$(BIN)/pytest

# The quick loop: unit tests only (no event loop, no services), property tests at a twentieth of
# their examples (make pytest runs them all).
unit: setup
	TELEMETRY_TEST_EXAMPLES_FACTOR=0.05 $(BIN)/pytest -q -p no:cacheprovider tests/unit

# Builds the Dockerfile with podman and runs the compose stack (docs/deploy.md); needs root.
container-check:
	bash .ci/container-check.sh

test: lint pytest container-check

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis .ci/.cache
