# Two set-up commands for a fresh Debian 12 machine: `make demo` and `make test`.
# Both install what is missing (Debian packages, a virtual environment with pinned dependencies)
# and are safe to run again.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test deps apt venv lock lint bench clean

demo: deps
	$(PY) -m gateway.demo

test: deps
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

deps: apt venv

apt:
	@scripts/ensure-apt.sh requirements/apt.txt

venv: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# Re-pin after changing pyproject.toml's dependencies.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > requirements/lock.txt

lint: deps
	$(VENV)/bin/ruff check gateway dispatcher loadtest tests

clean:
	rm -rf $(VENV) .pytest_cache
