# vit-lightning: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The stamp makes `make install` a no-op until pyproject.toml changes.
STAMP := $(VENV)/.installed-stamp
# One or more configs, merged left to right: CONFIG="configs/cifar10.yaml configs/overlays/cifar10_deit.yaml"
CONFIG ?= configs/cifar10.yaml
# An experiment file (configs/experiments/): `make experiment SPEC=...`
SPEC ?= configs/experiments/fashion_mnist_patch.yaml

.PHONY: help install test test-all lint format notebooks docs fit experiment bench profile clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install the package with its dev extra (once per pyproject change)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off --upgrade pip
	# torch/torchvision resolve from the registry as a matching pair; never pin the local CPU wheel.
	$(PY) -m pip install --progress-bar off -e ".[dev]"
	@touch $@

test: install ## Run the fast test suite (everything not marked slow)
	$(PY) -m pytest -m "not slow" -n auto --maxprocesses=4

test-all: install ## Run every test, including the slow ones
	$(PY) -m pytest -n auto --maxprocesses=4

lint: install ## ruff check and ruff format --check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install ## Apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

notebooks: install ## Write notebooks/*.ipynb from their jupytext sources notebooks/*.py (no outputs)
	$(PY) -m vit_lightning.analysis.tutorial notebooks/[0-9]*.py

docs: install ## Write docs/*.md's generated sections (module map, augmentation table, callbacks)
	$(PY) docs/generate.py

fit: install ## Train the default CIFAR-10 recipe (CONFIG="base overlay..." for another)
	$(PY) -m vit_lightning fit $(foreach c,$(CONFIG),--config $(c))

experiment: install ## Run an experiment file's runs (skipping finished ones), then its compare table: SPEC=...
	$(PY) -m vit_lightning multirun --spec $(SPEC)
	$(PY) -m vit_lightning compare --spec $(SPEC)

bench: install ## Benchmarks side by side (ours vs timm, Lightning overhead, data loading); tables into docs/performance.md
	$(PY) -m benchmarks

profile: install ## Profile the template's training steps with the PyTorch profiler (trace in runs/profile)
	$(PY) -m benchmarks.profile_step

clean: ## Remove caches and run outputs (keeps .venv and data/)
	rm -rf .pytest_cache .ruff_cache lightning_logs wandb checkpoints
