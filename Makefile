# The two commands of the README's Quickstart:
#   make serve   install everything, then start the service with embedded defaults on http://127.0.0.1:8000
#   make test    install everything, then run the test suite (what CI runs through .ci/run)
# A GPU machine: `make serve TORCH_SPEC="torch==2.11.0" EXTRAS=gpu` (gsplat compiles its kernels on first use).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On the CPU development/CI machines this resolves to a local CPU build of torch; an unpinned torch would
# pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,cluster
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install viewer browser postgres serve test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed viewer

# The viewer's third-party modules (Spark, three.js) come from npm at install time; nothing of theirs is committed.
viewer:
	$(PY) -m splatworks.viewer.build

# Headless Chromium for the viewer tests (Debian's package; playwright-core drives it).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# PostgreSQL for the cluster tests (Debian's package; the tests start a throwaway server on loopback).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql >/dev/null; }

serve: install
	$(VENV)/bin/splatworks serve --host $(HOST) --port $(PORT)

test: install browser postgres
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) src/splatworks/viewer/node_modules src/splatworks/viewer/static/vendor
