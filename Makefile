# Two set-up commands for a fresh Debian 12 machine: `make demo` and `make test`.
# Both install what is missing (Debian packages, a virtual environment with pinned dependencies)
# and are safe to run again.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-chroot deps apt venv lock lint clean bench-deps

demo: deps
	$(PY) -m gateway.demo

test: deps
	$(VENV)/bin/ruff check gateway dispatcher loadtest tests benchmarks
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The Ansible roles applied for real into a debootstrapped Debian 12 root (needs root and the Debian
# mirror; 3-5 minutes, the base system cached in /var/cache/aivg-test). CI runs it after `make test`.
test-chroot: deps
	$(PY) -m pytest -q -ra -m chroot tests/ansible

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

# Benchmark-only: Pipecat in its own .venv-bench for `benchmarks/model_link.py` (gateway vs Pipecat side by
# side, docs/benchmarks.md). Never part of `make test`; the gateway's .venv does not get Pipecat.
bench-deps: deps
	@test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install -q -r benchmarks/requirements-pipecat.txt

lint: deps
	$(VENV)/bin/ruff check gateway dispatcher loadtest tests benchmarks

clean:
	rm -rf $(VENV) .venv-bench .pytest_cache
