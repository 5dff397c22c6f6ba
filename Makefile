# The README's two commands: `make demo` and `make test`.
# Each creates .venv if missing and (re)installs the package with every extra
# whenever pyproject.toml, setup.py or the C extension's source changes, then runs.
# The optional C extension (dataforge/_jpeg.c, region JPEG decode) is compiled by
# that install when gcc and the libjpeg headers are there (Debian: libjpeg-dev);
# without them the install still succeeds and dataforge decodes whole images.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dataforge-installed

.PHONY: demo test setup lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py dataforge/_jpeg.c | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m dataforge bench all --quick

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check dataforge tests benchmarks recipes
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
