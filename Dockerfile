# The Lambda function image: pyannote pipeline baked in, awslambdaric as the entrypoint.
# Built with Docker and BuildKit, normally through `sam build` (template.yaml's Metadata passes the arguments):
#
#   HF_TOKEN=hf_... sam build                      # samconfig.toml turns on --use-buildkit
#   DOCKER_BUILDKIT=1 docker build --secret id=hf_token,env=HF_TOKEN -t diarization .   # the image alone
#
# No `# syntax=` line: it would make BuildKit fetch a frontend image from a registry; the built-in frontend
# handles everything used here (RUN --mount=type=bind|secret).
#
# Build arguments
#   BASE_IMAGE       python:3.11-slim-bookworm (default) or public.ecr.aws/lambda/python:3.11 (both work)
#   PIP_EXTRA_ARGS   extra pip options; by default PyTorch's CPU index, so the image carries no CUDA
#                    libraries (torch==2.14.1 resolves to 2.14.1+cpu there)
#   MODEL_SOURCE     pretrained: bake HF_MODEL@HF_REVISION with the hf_token BuildKit secret (default)
#                    offline:    an untrained production-architecture pipeline (tests, no token)
# Targets: `function` (default, runs as an unprivileged user) and `local` (the same files as root: `sam local`
# adds its emulator to the image in a RUN step that needs root; Lambda ignores the image's user anyway).
# The token exists only inside the one RUN that mounts it: never in an ARG, ENV or layer.
# Layers go from rarely to often changing: dependencies, model, code.

ARG BASE_IMAGE=python:3.11-slim-bookworm
#checkov:skip=CKV_DOCKER_7:The base image is a build argument whose default is pinned (3.11-slim-bookworm).
#checkov:skip=CKV_DOCKER_2:Lambda pulls work through the Runtime API; there is no port to health-check.

FROM ${BASE_IMAGE} AS deps
ARG PIP_EXTRA_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY requirements/runtime.txt /tmp/runtime.txt
# hadolint ignore=SC2086
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet $PIP_EXTRA_ARGS torch==2.14.1 torchaudio==2.11.0 \
 && /opt/venv/bin/pip install --quiet $PIP_EXTRA_ARGS -r /tmp/runtime.txt \
 && /opt/venv/bin/python -c "import torch, torchaudio, av, pyannote.audio, awslambdaric"

FROM deps AS model
ARG MODEL_SOURCE=pretrained
ARG HF_MODEL=pyannote/speaker-diarization-community-1
ARG HF_REVISION=""
# The code is bind-mounted for this one step rather than copied: the stage adds the model and nothing else.
RUN --mount=type=bind,source=function/diarization,target=/opt/build/diarization \
    --mount=type=secret,id=hf_token \
    export PYTHONPATH=/opt/build PYTHONDONTWRITEBYTECODE=1 PYANNOTE_METRICS_ENABLED=false \
 && if [ "$MODEL_SOURCE" = offline ]; then \
      /opt/venv/bin/python -m diarization.modelmaking.offline /opt/diarization/model --variant production \
      && /opt/venv/bin/python -m diarization.modelmaking.bake /opt/diarization/model --verify-only; \
    else \
      /opt/venv/bin/python -m diarization.modelmaking.bake /opt/diarization/model --model "$HF_MODEL" \
        ${HF_REVISION:+--revision "$HF_REVISION"}; \
    fi

FROM ${BASE_IMAGE} AS local
ENV PATH=/opt/venv/bin:$PATH \
    MODEL_DIR=/opt/diarization/model \
    HF_HUB_OFFLINE=1 \
    PYANNOTE_METRICS_ENABLED=false \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LAMBDA_TASK_ROOT=/var/task
COPY --from=deps /opt/venv /opt/venv
COPY --from=model /opt/diarization/model /opt/diarization/model
WORKDIR /var/task
COPY function/ /var/task/
RUN python -m compileall -q /var/task
# One image, two hosts: Lambda runs the CMD (a handler, through awslambdaric); SageMaker runs `IMAGE serve`
# (the inference server on port 8080). For GPUs, build with --build-arg PIP_EXTRA_ARGS= (PyPI's CUDA wheels).
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/python", "-m", "diarization.entrypoint"]
CMD ["diarization.handler.lambda_handler"]

FROM local AS function
# Lambda runs images as a non-root user anyway; say so, so that other runtimes (SageMaker, docker run) do too.
USER 1000:1000
