# Two entry points: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# torch is pinned here (not in pyproject.toml) so that `pip install -e .` elsewhere keeps the
# user's own torch build; 2.13.0 is the release this project is tested with.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install train test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)

# Train the default model (latent ODE on spirals, CPU, ~3 min); extra overrides via ARGS,
# e.g. make train ARGS="solver=rk4 solver.step_size=0.05"
train: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) train.py $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	OMP_NUM_THREADS=2 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
