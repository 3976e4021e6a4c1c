# The two commands a newcomer runs: `make test` and `make demo`. Both set up `.venv` from
# nothing on a fresh Debian machine (Python >= 3.11 with venv and pip).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.polystore-installed
SYSTEM_STAMP := $(VENV)/.system-packages
# Debian packages napari's Qt needs to run under Xvfb (pytest-xvfb starts one for the tests),
# and a JVM with ImageJ's jar (/usr/share/java/ij.jar) for the Fiji bridge's tests.
# Without libxcb-icccm4, libxcb-keysyms1 and libxcb-xinerama0 Qt aborts at start.
SYSTEM_PACKAGES := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 \
	libgl1 libgl1-mesa-dri libglx-mesa0 libegl1 libfontconfig1 libglib2.0-0 libdbus-1-3 \
	libxkbcommon-x11-0 libxcb-cursor0 libxcb-image0 libxcb-randr0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 \
	openjdk-17-jre imagej

.PHONY: test demo lint typecheck pytest docs docs-html screenshots bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# apt runs only when a package is missing (a machine that has them all never calls apt);
# as root it installs them, otherwise it stops and prints the command to run.
$(SYSTEM_STAMP): Makefile | $(PY)
	@if ! command -v dpkg >/dev/null; then \
		echo "Not a Debian system: make sure Xvfb, OpenGL (Mesa) and Qt's xcb libraries are installed."; \
		exit 0; \
	fi; \
	missing=""; \
	for package in $(SYSTEM_PACKAGES); do \
		dpkg -s "$$package" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -eq 0 ]; then \
			echo "Installing Debian packages for napari under Xvfb:$$missing"; \
			apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing \
				|| exit 1; \
		else \
			echo "napari needs these Debian packages to run under Xvfb:$$missing"; \
			echo "Install them (as root), then run make again:"; \
			echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$$missing"; \
			exit 1; \
		fi; \
	fi
	touch $(SYSTEM_STAMP)

# torch is pinned here (not in pyproject) because 2.13.0 is the CPU-only wheel these
# machines carry; an unpinned torch pulls several GB of CUDA packages.
$(STAMP): pyproject.toml .ci/constraints.txt | $(PY) $(SYSTEM_STAMP)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]" -c .ci/constraints.txt
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check polystore polystore_napari polystore_fiji tests benchmarks demos docs/conf.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Two processes: napari's OpenGL (Mesa's LLVM) and TensorFlow's LLVM crash when they share
# one, so the viewer tests (marker `napari`, left out of a plain run) get their own.
pytest: $(STAMP)
	$(PY) -m pytest
	$(PY) -m pytest -m napari

# The documentation site (Sphinx + MyST, docs/conf.py says why), warnings as errors: a broken
# link, reference, picture or docstring fails the build. The guides' pictures are taken by the
# tests from real viewers (tests/test_screenshots.py, both pytest runs), never committed, so the
# site cannot show an older version's window: `make docs` takes them first, `make test` has.
DOCS_BUILD := build/docs

docs-html: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -E -b html docs $(DOCS_BUILD)
	@echo "documentation site: $(DOCS_BUILD)/index.html"

screenshots: $(STAMP)
	$(PY) -m pytest -q tests/test_screenshots.py
	$(PY) -m pytest -q -m napari tests/test_screenshots.py

docs: screenshots docs-html

test: lint typecheck pytest docs-html

# The core tour (seconds), then the main demo: napari with the plugin, fed by a pipeline
# process streaming a plate; without a display it starts Xvfb, saves a screenshot and says where.
demo: $(STAMP)
	$(PY) demos/core_demo.py
	$(PY) demos/napari_demo.py

# Each benchmark also writes its figure and table to benchmarks/figures/ (README and docs show them).
bench: $(STAMP)
	$(VENV)/bin/pip install --quiet -e ".[bench]" -c .ci/constraints.txt
	$(PY) benchmarks/core.py
	$(PY) benchmarks/zarr.py
	$(PY) benchmarks/streaming.py
	xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) benchmarks/napari_stream.py
	xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) benchmarks/fiji_stream.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(DOCS_BUILD) docs/_generated
