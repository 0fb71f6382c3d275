# Two entry points: `make train` and `make test`. Both create .venv on first use. `make help` (or
# plain `make`) lists the targets: the `## ` comment after a target's name is its description.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# torch is pinned here (not in pyproject.toml) so that `pip install -e .` elsewhere keeps the
# user's own torch build; 2.13.0 is the release this project is tested with.
TORCH_SPEC ?= torch==2.13.0

.DEFAULT_GOAL := help
.PHONY: help install train eval test lint bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  %-8s %s\n", $$1, $$2}'

# One venv and one install stamp for every target: the package with its training stack, test
# and benchmark extras (the `node` solver itself needs torch alone: `pip install -e .`).

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,bench,sweep]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv: torch (pinned), the package with its [dev,bench,sweep] extras

# Train the default model (latent ODE on spirals, CPU, ~3 min); extra overrides via ARGS,
# e.g. make train ARGS="solver=rk4 solver.step_size=0.05"
train: $(STAMP) ## Train the default model (latent ODE on spirals, ~2.5 min on CPU); ARGS="..." overrides
	OMP_NUM_THREADS=2 $(PY) train.py $(ARGS)

# Evaluate a checkpoint on its test split (metrics.json and plots under logs/eval/runs/), e.g.
# make eval CKPT=logs/train/runs/<run>/checkpoints/last.ckpt ARGS="plots.enabled=false"
eval: $(STAMP) ## Test a checkpoint: CKPT=<file> (e.g. logs/train/runs/<run>/checkpoints/last.ckpt)
	@test -n "$(CKPT)" || { echo "usage: make eval CKPT=<checkpoint file> [ARGS=\"...\"]"; exit 2; }
	OMP_NUM_THREADS=2 $(PY) eval.py ckpt_path=$(CKPT) $(ARGS)

lint: $(STAMP) ## ruff check
	$(VENV)/bin/ruff check .

# One pytest worker per core, at most 8 (pytest-xdist; the tests are independent and write only
# under their tmp_path; each worker holds its own torch, a few hundred MB), one thread each: most
# tests are small solves dominated by Python overhead, so two workers on two cores take about half
# the serial time. `make test TEST_WORKERS=1` (or plain `pytest`) runs serially.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(8, os.cpu_count() or 1))")

test: $(STAMP) lint ## Lint, then the whole test suite (tests/node/: solver, tests/app/: training app)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP) ## Run the benchmark suites (bench/) and rewrite bench/README.md
	$(PY) -m bench.run_all

clean: ## Remove .venv and the tool caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
