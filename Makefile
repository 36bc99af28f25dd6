# tns-pipelines: every target that needs Python runs `setup` first, which is idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Python env of the Triton python-backend models and the tritonserver binary (numpy<2: see serving/requirements.txt).
SERVING_ENV ?= .venv-serving
SERVING_STAMP := $(SERVING_ENV)/.installed
export TNS_SERVING_ENV := $(abspath $(SERVING_ENV))
export TNS_HOME ?= $(CURDIR)/.tns
export TMPDIR := $(TNS_HOME)/tmp
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: setup run serve demo-drift test test-fast lint format compile compile-check bench bench-quality clean clean-envs

setup: $(STAMP) $(SERVING_STAMP)
	@# Headless Chromium renders the drift report in tests/monitoring/test_report_browser.py: installed when
	@# missing and we are root with apt-get (CI); otherwise only a note (the test then says how to install it).
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		(test "$$(id -u)" = 0 && command -v apt-get >/dev/null && apt-get update -qq && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) || \
		echo "note: chromium is not installed; tests/monitoring/test_report_browser.py needs it (apt-get install chromium)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The Triton wheels go in with --no-deps (see serving/requirements-triton.txt): only their binaries are used, and
# their dependency lists would add the PyTriton and client Python stacks (pyzmq, grpcio, typer, ...) to the env.
$(SERVING_STAMP): serving/requirements.txt serving/requirements-triton.txt
	test -x $(SERVING_ENV)/bin/python || $(PYTHON) -m venv $(SERVING_ENV)
	$(SERVING_ENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(SERVING_ENV)/bin/python -m pip install --quiet --disable-pip-version-check -r serving/requirements.txt
	$(SERVING_ENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		-r serving/requirements-triton.txt
	touch $(SERVING_STAMP)

$(TMPDIR):
	mkdir -p $(TMPDIR)

run: setup $(TMPDIR)
	$(BIN)/tns run training

serve: setup $(TMPDIR)
	$(BIN)/tns serve

# The monitoring loop end to end: serve the champion, simulate drifting traffic through the client, `tns drift`
# fires, a retraining run is submitted locally and gated (trains a champion first when there is none).
# new_slang moves only text descriptors with a default champion: the demo's rules count every drifted signal
demo-drift: setup $(TMPDIR)
	$(BIN)/python -m tns.demo --retrain-on-any-drift

test: setup $(TMPDIR)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/tns compile --check
	$(BIN)/python -m pytest -q --durations=25

test-fast: setup $(TMPDIR)
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: setup
	$(BIN)/tns compile

compile-check: setup
	$(BIN)/tns compile --check

bench: setup $(TMPDIR)
	$(BIN)/python -m benchmarks.run --out docs/benchmarks.md

# The default model against TF-IDF + LR and pixel LR on the embedded set, Multilingual HateCheck and the
# Fashion-MNIST training file (Debian's dataset-fashion-mnist, installed when missing and we are root): not part of
# `make test` (about 30 minutes on 2 cores); writes its section of docs/benchmarks.md.
bench-quality: setup $(TMPDIR)
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
		(test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist) || \
		echo "note: apt-get install dataset-fashion-mnist for the image benchmark"
	$(BIN)/python -m benchmarks.quality --out docs/benchmarks.md

clean:
	rm -rf $(TNS_HOME)

clean-envs:
	rm -rf $(VENV) $(SERVING_ENV)
