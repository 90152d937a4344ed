# Set-up and entry points for a fresh machine. `make test` and `make demo` create .venv, install the CPU
# build of torch that these machines carry, then the package with its test extras (which include the `dicom`
# extra, highdicom), and run the suite or the demo.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

DEPLOY_VENV := .venv-deploy

.PHONY: install test test-deploy demo lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests monai_cluscam --doctest-modules --durations=15

# The MONAI Deploy application's end-to-end test, in an environment of its own: the SDK (about 580 MB of Holoscan
# and CUDA libraries) makes every `import monai` load Holoscan, so it stays out of the main one (docs/deploy.md).
test-deploy:
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/pip install --quiet torch==2.13.0
	$(DEPLOY_VENV)/bin/pip install --quiet -e ".[test,deploy]"
	$(DEPLOY_VENV)/bin/python -m pytest -q tests/deploy

demo: $(STAMP)
	$(PY) tools/demo.py --output demo_output --overwrite

lint: $(STAMP)
	$(VENV)/bin/ruff check monai_cluscam tests benchmarks tools

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) .pytest_cache build *.egg-info
