# The two commands: `make book` and `make test`. Each creates .venv from the pins if needed.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick

.PHONY: venv test book bench lock clean-book help

help:
	@echo "make book   build the book on the simulated screen (profile $(PROFILE))"
	@echo "make test   run the test suite (unit tests + smoke run of every notebook)"
	@echo "make bench  run the benchmarks in benchmarks/"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

book: $(STAMP)
	$(VENV)/bin/i2o book --profile $(PROFILE)

bench: $(STAMP)
	$(PY) -m benchmarks

lock:
	rm -rf /tmp/i2o-lock && $(PYTHON) -m venv /tmp/i2o-lock
	/tmp/i2o-lock/bin/pip install --quiet -r requirements.txt
	{ sed -n 1,2p requirements.lock; /tmp/i2o-lock/bin/pip freeze | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean-book:
	rm -rf book/_build book/executed
