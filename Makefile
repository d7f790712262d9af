# One command sets up everything on a fresh machine: `make train` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of torch is installed first so that `pip install .` does not pull a multi-GB CUDA build.
# On a CUDA machine: make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" ...
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser train test test-slow test-all bench mutation lint format clean

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

# Tests run in one worker process per core (pytest-xdist, at most 4): most of them wait on
# subprocesses or run single-threaded torch, so two cores halve the wall time. worksteal: a
# worker that is done takes queued tests from a busy one (the slow suite has a few long tests).
XDIST := -n auto --maxprocesses 4 --dist worksteal

test: $(STAMP) browser
	$(PY) -m pytest -q $(XDIST) $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m slow $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m 'slow or not slow' $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/vector_throughput.py
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/time_to_solve.py

# Mutation testing (mutmut, config in pyproject's [tool.mutmut]); results are kept in mutants/ and
# only changed code is re-tested on the next run. MODULE=puffer/spaces.py (a file or a folder)
# restricts the run to that module's mutants; `$(VENV)/bin/mutmut show NAME` prints one mutant.
MUTANTS = $(if $(MODULE),"$(subst /,.,$(patsubst %/,%,$(MODULE:.py=))).*")
mutation: $(STAMP)
	$(PY) -m pip install --quiet -e '.[mutation]'
	$(VENV)/bin/mutmut run --max-children $(or $(JOBS),2) $(MUTANTS)
	$(VENV)/bin/mutmut results | grep -v ': killed' | grep '$(subst /,.,$(patsubst %/,%,$(MODULE:.py=)))' || true

lint: $(STAMP)
	$(VENV)/bin/ruff check puffer hydra_plugins tests benchmarks
	$(VENV)/bin/ruff format --check puffer hydra_plugins tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix puffer hydra_plugins tests benchmarks
	$(VENV)/bin/ruff format puffer hydra_plugins tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dist build
