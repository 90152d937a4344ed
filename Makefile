# Set-up and entry points for a fresh machine. `make test` and `make demo` create .venv, install the CPU
# build of torch that these machines carry, then the package with its test extras (which include the `dicom`
# extra, highdicom), and run the suite or the demo.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install test demo lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests monai_cluscam --doctest-modules --durations=15

demo: $(STAMP)
	$(PY) tools/demo.py --output demo_output --overwrite

lint: $(STAMP)
	$(VENV)/bin/ruff check monai_cluscam tests benchmarks tools

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
