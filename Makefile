# The two commands users need: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint soak cluster bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install only when the project definition changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	-PYTHON=$(BIN)/python bash scripts/ensure_kafka.sh
	$(BIN)/elimu up

test: $(VENV)/.installed
	bash scripts/ensure_chromium.sh
	PYTHON=$(BIN)/python bash scripts/ensure_kafka.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# 30 min at 1,000 events/s with a trickle of hostile input (ELIMU_SOAK_S, ELIMU_SOAK_RATE);
# figures in .elimu/soak.md. The test sets its own timeout from the duration.
soak: $(VENV)/.installed
	PYTHON=$(BIN)/python bash scripts/ensure_kafka.sh
	$(BIN)/python -m pytest -q -m slow -p no:randomly -rA tests/soak

# Three Apache Kafka brokers on loopback, one SIGKILLed mid-stream (docs/operations.md).
cluster: $(VENV)/.installed
	PYTHON=$(BIN)/python bash scripts/ensure_kafka.sh
	$(BIN)/python -m pytest -q -m cluster -p no:randomly -rA -s tests/cluster

bench: $(VENV)/.installed
	$(BIN)/elimu bench

clean:
	rm -rf $(VENV) .elimu
