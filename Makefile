# Set-up and entry points for a fresh machine. `make test` creates .venv, installs the CPU build of
# torch that these machines carry, then the package with its test extras, and runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests monai_cluscam --doctest-modules

lint: $(STAMP)
	$(VENV)/bin/ruff check monai_cluscam tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
