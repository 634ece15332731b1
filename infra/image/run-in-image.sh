#!/usr/bin/env bash
# The bootstrap the Lambda Runtime Interface Emulator starts on the host: the image's own entrypoint
# and command, run in a buildah container that shares the host network, so awslambdaric inside the
# image reaches the emulator's Runtime API. Function settings are forwarded from this environment.
#
# Usage (as the emulator's command): infra/image/run-in-image.sh IMAGE
set -euo pipefail
image=$1
store=${BUILDAH_STORE:-$(dirname "$0")/../../.build/containers}
buildah=(buildah --storage-driver vfs --root "$store/root" --runroot "$store/run")
container=$("${buildah[@]}" from --quiet "$image")
trap '"${buildah[@]}" rm "$container" >/dev/null 2>&1 || true' EXIT

forward=()
while IFS='=' read -r name _; do
  case $name in
    AWS_*|INPUT_*|OUTPUT_*|IDEMPOTENCY_TABLE|JOBS_TABLE|EVENT_BUS_NAME|WORK_QUEUE_URL|POWERTOOLS_*|LOG_LEVEL|MAX_AUDIO_*|NUM_THREADS|_HANDLER|_X_AMZN_TRACE_ID)
      forward+=(--env "$name=${!name}") ;;
  esac
done < <(env)

mapfile -t argv < <("${buildah[@]}" inspect --type image "$image" | python3 -c '
import json, sys
config = json.load(sys.stdin)["OCIv1"]["config"]
print("\n".join((config.get("Entrypoint") or []) + (config.get("Cmd") or [])))')
"${buildah[@]}" run --isolation chroot --network host "${forward[@]}" "$container" -- "${argv[@]}"
