# tns-pipelines: every target that needs Python runs `setup` first, which is idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TNS_HOME ?= $(CURDIR)/.tns
export TMPDIR := $(TNS_HOME)/tmp
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: setup run test test-fast lint format compile compile-check bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

$(TMPDIR):
	mkdir -p $(TMPDIR)

run: setup $(TMPDIR)
	$(BIN)/tns run training

test: setup $(TMPDIR)
	$(BIN)/ruff check .
	$(BIN)/tns compile --check
	$(BIN)/python -m pytest -q

test-fast: setup $(TMPDIR)
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: setup
	$(BIN)/tns compile

compile-check: setup
	$(BIN)/tns compile --check

bench: setup $(TMPDIR)
	$(BIN)/python -m benchmarks.run --out docs/benchmarks.md

clean:
	rm -rf $(TNS_HOME)
