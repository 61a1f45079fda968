# Two commands do everything: `make demo` and `make test`. Both install what they need into
# the repository (.venv, node_modules) on first use and reuse it afterwards.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# 2 shared cores: OpenMP's busy-waiting makes torch up to 12x slower under contention.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup demo test test-contracts test-python clean

setup: $(VENV)/.installed node_modules/.installed web/dist/index.html

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock 2> >(grep -v "is ignored: it is neither" >&2)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The web app (issue 9): its own pinned npm tree in web/, built to web/dist (served by `provenant app`).
web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

web/dist/index.html: web/node_modules/.installed web/index.html web/vite.config.js $(shell find web/src -type f 2>/dev/null)
	cd web && npm run --silent build -- --logLevel warn

demo: setup
	$(VENV)/bin/provenant demo

test: setup test-contracts test-python

test-contracts: setup
	node_modules/.bin/forge test

test-python: setup
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	$(PY) -m pytest

clean:
	rm -rf build .pytest_cache
