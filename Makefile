# Each target creates .venv and installs the project when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATASET ?= synthetic
PROFILE ?= demo
STAMP := $(VENV)/.installed
TEST_DIR := $(CURDIR)/.test-runs

.PHONY: demo test reproduce publish bench lint clean-test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## demo: the five notebooks on the built-in synthetic data (profile demo), then the results table
demo: $(STAMP)
	$(BIN)/python -m mammo_utils reproduce --profile demo --dataset synthetic

## reproduce: the five notebooks on DATASET at PROFILE, e.g. make reproduce DATASET=mias
reproduce: $(STAMP)
	$(BIN)/python -m mammo_utils reproduce --profile $(PROFILE) --dataset $(DATASET)

## publish: copy runs/PROFILE-DATASET's report and figures to docs/results/ (small, committed)
publish: $(STAMP)
	$(BIN)/python -m mammo_utils publish --profile $(PROFILE) --dataset $(DATASET)

## test: unit tests, then every notebook under nbmake at the smoke profile (in a scratch runs folder)
test: $(STAMP)
	rm -rf $(TEST_DIR)
	MAMMO_PROFILE=smoke MAMMO_DATASET=synthetic MAMMO_RUNS_DIR=$(TEST_DIR)/runs \
	MAMMO_DATA_DIR=$${MAMMO_TEST_DATA_DIR:-$(TEST_DIR)/data} MAMMO_PROGRESS=0 \
	$(BIN)/python -m pytest tests notebooks --nbmake --nbmake-timeout=900 -p no:cacheprovider

## bench: throughput benchmarks (ratios measured side by side; never part of the tests)
bench: $(STAMP)
	$(BIN)/python benchmarks/simclr_throughput.py

lint: $(STAMP)
	$(BIN)/ruff check mammo_utils tests benchmarks

clean-test:
	rm -rf $(TEST_DIR)
