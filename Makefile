# The README's two commands: `make demo` and `make test`.
# Each creates .venv if missing and (re)installs the package with every extra
# whenever pyproject.toml, setup.py or the C extension's source changes, then runs.
# The optional C extension (dataforge/_jpeg.c, region JPEG decode) is compiled by
# that install when gcc and the libjpeg headers are there (Debian: libjpeg-dev);
# without them the install still succeeds and dataforge decodes whole images. The
# optional C++ extension (dataforge/_crops.cpp, a batch's crops resized in one call) is
# built against the venv's torch by `setup.py build_ext --inplace` after the install
# (pip's isolated build has no torch); without g++ the presets resize crop by crop.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dataforge-installed

.PHONY: demo test setup lint bench clean docs

$(PY):
	$(PYTHON) -m venv $(VENV)

# Debian packages behind the C extension (compiler, Python and libjpeg headers) and the
# JPEG corpus tests (cjpeg, from libjpeg-turbo-progs): on Debian/Ubuntu as root (CI),
# whatever is missing is apt-get installed first; elsewhere the install goes on without.
$(STAMP): pyproject.toml setup.py dataforge/_jpeg.c dataforge/_crops.cpp | $(PY)
	@missing=""; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	command -v g++ >/dev/null 2>&1 || missing="$$missing g++"; \
	[ -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || missing="$$missing python3-dev"; \
	dpkg -s libjpeg-dev >/dev/null 2>&1 || [ -f /usr/include/jpeglib.h ] || missing="$$missing libjpeg-dev"; \
	command -v cjpeg >/dev/null 2>&1 || missing="$$missing libjpeg-turbo-progs"; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "apt-get install:$$missing"; \
		log=$$( (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing) 2>&1) || { echo "$$log"; exit 1; }; \
	elif [ -n "$$missing" ]; then \
		echo "note: missing$$missing (the C extension or the cjpeg corpus tests may be skipped)"; \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	$(PY) setup.py -q build_ext --inplace 2>&1 | grep -v -e "No CUDA runtime" -e "^copying" || true
	@$(PY) -c "import torch, dataforge._crops" 2>/dev/null || \
		echo "note: dataforge._crops (C++) not built or not loadable: the presets resize crop by crop"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m dataforge bench all --quick

test: setup
	$(PY) -m pytest -q

# The documentation site (docs/, Sphinx + MyST + autodoc) into docs/_build/html;
# warnings, broken references included, are errors. -E: a fresh read every time, since
# autodoc cannot see that a docstring changed.
docs: setup
	$(PY) -m sphinx -b html -E -W --keep-going docs docs/_build/html

lint: setup
	$(VENV)/bin/ruff check dataforge tests benchmarks recipes
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The peer arms of `dataforge bench image` (DALI-CPU, SPDL, FFCV; docs/bench_peers.md):
# Debian's FFmpeg 5.1 libraries (SPDL) and pkg-config + OpenCV + libturbojpeg headers (to
# build FFCV), apt-get installed as root, then the `peers` extra. `make test` needs none.
PEER_DEBS := libavutil57 libavcodec59 libavformat59 libavdevice59 libavfilter8 \
	pkg-config libopencv-dev libturbojpeg0-dev
.PHONY: setup-peers
setup-peers: setup
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(PEER_DEBS); \
	else \
		echo "note: install these Debian packages first (as root): $(PEER_DEBS)"; \
	fi
	$(PY) -m pip install -q -e '.[all,dev,peers]'
