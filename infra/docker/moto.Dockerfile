# The local AWS as a container: moto in server mode, for `sam local invoke` / `start-api`, whose function
# containers reach it by name on a Docker network the local tooling creates (infra/local_sam.py).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG PIP_EXTRA_ARGS=""
ARG MOTO_REQUIREMENT="moto[server]==5.2.5"
# hadolint ignore=SC2086
RUN python3 -m venv /opt/moto \
 && /opt/moto/bin/pip install --quiet --no-cache-dir $PIP_EXTRA_ARGS "$MOTO_REQUIREMENT"
USER 1000:1000
EXPOSE 5000
HEALTHCHECK CMD ["/opt/moto/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/moto-api/')"]
ENTRYPOINT ["/opt/moto/bin/moto_server", "--host", "0.0.0.0", "--port", "5000"]
