# ByteOr Cloud developer entry points. Needs only python3 (3.11+) and make.
#
#   make run     the whole system in the foreground (embedded services + api + workers)
#   make test    lint, format check, type check, then the full test suite (what CI runs)
#   make bench   benchmarks
#   make demo    demo data on a running `make run` (second terminal)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The OpenID provider the OIDC tests start (tests/oidc/provider.mjs, npm oidc-provider).
OIDC_DIR := tests/oidc
OIDC_STAMP := $(OIDC_DIR)/node_modules/.installed

.DEFAULT_GOAL := help

.PHONY: help venv run demo test lint fmt typecheck bench clean stack-start stack-stop stack-status

help:
	@echo "targets: venv run demo test bench lint fmt typecheck clean stack-start stack-stop stack-status"

venv: $(STAMP)

# Re-run when the dependency list or the pins change. An existing venv is reused, never
# recreated: `python3 -m venv` only runs when there is no interpreter in it yet.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	touch $@

# Node's own package manager, from the lock file; nothing runs when the lock is unchanged.
$(OIDC_STAMP): $(OIDC_DIR)/package.json $(OIDC_DIR)/package-lock.json
	cd $(OIDC_DIR) && npm ci --no-audit --no-fund --prefer-offline
	touch $@

run: $(STAMP)
	$(BIN)/byteor-cloud up

demo: $(STAMP)
	$(BIN)/byteor-cloud demo

test: $(STAMP) $(OIDC_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m ops.bench

stack-start: $(STAMP)
	$(BIN)/byteor-cloud stack start

stack-stop: $(STAMP)
	$(BIN)/byteor-cloud stack stop

stack-status: $(STAMP)
	$(BIN)/byteor-cloud stack status

# Removes the embedded stack's data (.byteor) and tool caches; keeps .venv.
# A stack still running from .byteor is stopped first, so nothing keeps writing there.
clean:
	if [ -f .byteor/stack.json ] && [ -x $(BIN)/byteor-cloud ]; then BYTEOR_CLOUD_HOME=$(CURDIR)/.byteor $(BIN)/byteor-cloud stack stop >/dev/null; fi
	rm -rf .byteor .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
