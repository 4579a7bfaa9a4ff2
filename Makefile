# The two commands of the README, plus a few conveniences.
#   make run   - create .venv, install, migrate the SQLite database, serve on 127.0.0.1:8080
#   make test  - install with the dev extra and run the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= $(or $(XIAOBAO_HTTP_PORT),8080)

.PHONY: run test lint check audit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/xiaobao db upgrade
	@echo "xiaobao: open http://127.0.0.1:$(PORT) in a browser (Ctrl+C stops)"
	XIAOBAO_HTTP_PORT=$(PORT) $(BIN)/xiaobao serve

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check bot knowledge classifiers handlers tests benchmarks

check: $(VENV)/.installed-dev
	$(BIN)/xiaobao kb check

# pip-audit over the installed environment; warns (does not fail) when its vulnerability
# service is out of reach, fails on a known vulnerability (docs/limits.md).
audit: $(VENV)/.installed-dev
	$(BIN)/python .ci/audit.py

test: $(VENV)/.installed-dev lint check audit
	$(BIN)/python -m pytest

# The instructions benchmark counts with valgrind's callgrind (Debian's valgrind package).
bench: $(VENV)/.installed-dev
	@command -v valgrind >/dev/null || { echo "make bench: installing Debian's valgrind"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) var test-artifacts .pytest_cache .ruff_cache
