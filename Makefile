# Everything a developer or CI runs. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODELS ?= .models
MODEL_DIR ?= $(MODELS)/offline-production
SAMPLE = $$($(PY) -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("pyannote.audio").submodule_search_locations[0]) / "sample" / "sample.wav")')

.PHONY: help setup model demo test lint lock clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create the virtual environment from the locked requirements

$(VENV)/.installed: requirements/runtime.txt requirements/dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

model: $(MODEL_DIR)/diarization-model.json  ## generate the untrained production-architecture pipeline

$(MODEL_DIR)/diarization-model.json: | $(VENV)/.installed
	$(PY) -m diarization.offline $(MODEL_DIR) --variant production

demo: setup model  ## diarize pyannote's 30 s sample recording with the local pipeline
	$(PY) -m diarization "$(SAMPLE)" --model-dir $(MODEL_DIR)

test: setup  ## run the test suite
	MODELS_CACHE=$(abspath $(MODELS))/test $(PY) -m pytest

lint: setup  ## ruff, formatting and mypy
	$(PY) -m ruff check function tests
	$(PY) -m ruff format --check function tests
	$(PY) -m mypy

lock:  ## re-resolve requirements/*.txt from the direct dependencies in fresh environments
	bash infra/lock.sh

clean:  ## remove generated models and caches (keeps the venv)
	rm -rf $(MODELS) .pytest_cache .mypy_cache .ruff_cache
