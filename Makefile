# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test install install-test bench clean

# The library and what it runs on.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# Plus the test tools (and agno, only to prove table interop).
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(PY) -m kern_tasks run

# Test files spread over PYTEST_WORKERS processes, each file whole on one (--dist loadfile),
# each process with a Redis of its own (tests/conftest.py).
# Three on two CPUs: the multi-process tests (beat replicas, SIGKILLs, outages) mostly wait;
# 1,739 tests took 11 min 22 s at -n 3 on a loaded machine (19 min 37 s at -n 2, also loaded).
PYTEST_WORKERS ?= 3

test: install-test
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: install-test
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .kern .pytest_cache
