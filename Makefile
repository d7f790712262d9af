# One command sets up everything on a fresh machine: `make train` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of torch is installed first so that `pip install .` does not pull a multi-GB CUDA build.
# On a CUDA machine: make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" ...
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser train test test-slow test-all bench lint format clean

setup: $(STAMP) browser

# Debian's chromium: the report tests open the HTML report in it (headless).
browser:
	sh scripts/install_chromium.sh

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m puffer.train env=cartpole $(ARGS)

test: $(STAMP) browser
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m 'slow or not slow' $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/vector_throughput.py
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/time_to_solve.py

lint: $(STAMP)
	$(VENV)/bin/ruff check puffer hydra_plugins tests benchmarks
	$(VENV)/bin/ruff format --check puffer hydra_plugins tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix puffer hydra_plugins tests benchmarks
	$(VENV)/bin/ruff format puffer hydra_plugins tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dist build
