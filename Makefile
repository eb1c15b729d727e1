# Each target creates .venv and installs the project when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATASET ?= synthetic
PROFILE ?= demo
STAMP := $(VENV)/.installed
KERNEL := $(VENV)/share/jupyter/kernels/mammo-contrastive/kernel.json
TEST_DIR := $(CURDIR)/.test-runs

.PHONY: demo test reproduce publish bench lint lab clean-test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The notebooks' kernel: this .venv registered with Jupyter as "mammo-contrastive" (inside .venv only).
$(KERNEL): $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name mammo-contrastive --display-name "Python (mammo-contrastive)"

## lab: JupyterLab on notebooks/ with the course's kernel (creates .venv and registers the kernel when missing)
lab: $(KERNEL)
	$(BIN)/jupyter lab notebooks/

## demo: the five notebooks on the built-in synthetic data (profile demo), then the results table
demo: $(KERNEL)
	$(BIN)/python -m mammo_utils reproduce --profile demo --dataset synthetic

## reproduce: the five notebooks on DATASET at PROFILE, e.g. make reproduce DATASET=mias
reproduce: $(KERNEL)
	$(BIN)/python -m mammo_utils reproduce --profile $(PROFILE) --dataset $(DATASET)

## protocols: the protocol study on DATASET at PROFILE (what each split protocol does to the number), e.g.
## make protocols DATASET=mias; stages 01 and 02 run first where they have not (each skips itself when done)
.PHONY: protocols
protocols: $(STAMP)
	$(BIN)/python -m mammo_utils prepare --profile $(PROFILE) --dataset $(DATASET)
	$(BIN)/python -m mammo_utils pretrain --profile $(PROFILE) --dataset $(DATASET)
	$(BIN)/python -m mammo_utils protocols --profile $(PROFILE) --dataset $(DATASET)

## budget: the budget curve on DATASET (the crop task's probe after 0 ... 2000 pretraining steps; about 30 minutes
## on MIAS on 2 cores with bf16), e.g. make budget DATASET=mias; stage 01 runs first where it has not
.PHONY: budget
budget: $(STAMP)
	$(BIN)/python -m mammo_utils prepare --profile $(PROFILE) --dataset $(DATASET)
	$(BIN)/python -m mammo_utils budget --profile $(PROFILE) --dataset $(DATASET)

## recipe: the recipe search on DATASET (pretraining variants, each scored by the crop task's probe on the training and
## validation women only; about 45 minutes on MIAS on 2 cores with bf16), e.g. make recipe DATASET=mias
.PHONY: recipe
recipe: $(STAMP)
	$(BIN)/python -m mammo_utils prepare --profile $(PROFILE) --dataset $(DATASET)
	$(BIN)/python -m mammo_utils recipe --profile $(PROFILE) --dataset $(DATASET)

## publish: copy runs/PROFILE-DATASET's report and figures to docs/results/ (small, committed)
publish: $(STAMP)
	$(BIN)/python -m mammo_utils publish --profile $(PROFILE) --dataset $(DATASET)

## test: unit tests (with every notebook run with its solutions), then every notebook as committed under nbmake
## at the smoke profile, where each exercise must say NOT YET (in a scratch runs folder, removed when all pass)
test: $(KERNEL)
	rm -rf $(TEST_DIR)
	MAMMO_PROFILE=smoke MAMMO_DATASET=synthetic MAMMO_RUNS_DIR=$(TEST_DIR)/runs \
	MAMMO_DATA_DIR=$${MAMMO_TEST_DATA_DIR:-$(TEST_DIR)/data} MAMMO_PROGRESS=0 MAMMO_EXPECT_CHECKS="NOT YET" \
	$(BIN)/python -m pytest tests notebooks --nbmake --nbmake-timeout=900 -p no:cacheprovider --durations=15
	rm -rf $(TEST_DIR)

## course: the executed notebooks of the synthetic demo into docs/course/ (outputs kept, figures downscaled)
.PHONY: course
course: demo
	$(BIN)/python -m mammo_utils course --profile demo --dataset synthetic

## bench: throughput benchmarks (ratios measured side by side; never part of the tests)
bench: $(STAMP)
	$(BIN)/python benchmarks/simclr_throughput.py

lint: $(STAMP)
	$(BIN)/ruff check mammo_utils tests benchmarks

clean-test:
	rm -rf $(TEST_DIR)
