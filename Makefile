# The two commands a newcomer runs: `make test` and `make demo`. Both set up `.venv` from
# nothing on a fresh Debian machine (Python >= 3.11 with venv and pip).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.polystore-installed

.PHONY: test demo lint typecheck pytest bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch is pinned here (not in pyproject) because 2.13.0 is the CPU-only wheel these
# machines carry; an unpinned torch pulls several GB of CUDA packages.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]" -c .ci/constraints.txt
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check polystore polystore_napari polystore_fiji tests benchmarks demos

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest

test: lint typecheck pytest

demo: $(STAMP)
	$(PY) demos/core_demo.py

bench: $(STAMP)
	$(PY) benchmarks/core.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
