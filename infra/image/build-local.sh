#!/usr/bin/env bash
# Build the function image here, without a Docker engine: buildah (vfs storage, chroot isolation)
# on a Debian bookworm base bootstrapped with mmdebstrap, because public base images cannot be
# pulled here. PyTorch's CPU index is not reachable either, so this build installs the same torch
# version from this machine's local wheel indexes (a CUDA build: a much larger image than the
# CPU-only one a normal build produces). The model is the offline, untrained one (no token here).
#
# Usage: infra/image/build-local.sh [TAG]     (default localhost/diarization:test)
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-localhost/diarization:test}
store=${BUILDAH_STORE:-$PWD/.build/containers}
buildah=(buildah --storage-driver vfs --root "$store/root" --runroot "$store/run")
base=localhost/debian-python:bookworm

for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y buildah mmdebstrap" >&2; exit 1; }
done
mkdir -p .build
if ! "${buildah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
  mmdebstrap --quiet --variant=apt --include=python3,python3-venv,ca-certificates bookworm .build/base.tar
  container=$("${buildah[@]}" from scratch)
  mountpoint=$("${buildah[@]}" mount "$container")
  tar -C "$mountpoint" -xf .build/base.tar
  "${buildah[@]}" umount "$container"
  "${buildah[@]}" commit --quiet "$container" "$base"
  "${buildah[@]}" rm "$container" >/dev/null
  rm -f .build/base.tar
fi

indexes=()
for index in /opt/pypi-more/simple /opt/pypi/simple; do
  [ -d "$index" ] && indexes+=(--extra-index-url "file://$index")
done
volumes=()
for dir in /opt/pypi /opt/pypi-more; do
  [ -d "$dir" ] && volumes+=(--volume "$dir:$dir:ro")
done
# This machine reaches PyPI through a proxy whose CA only the host trusts: lend pip the host's bundle.
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] && volumes+=(--volume "$ca:/etc/ssl/host-ca.crt:ro") && indexes+=(--cert /etc/ssl/host-ca.crt)

# No --layers: with vfs storage every committed layer is a full copy of the file system.
export TMPDIR=$PWD/.build/tmp
mkdir -p "$TMPDIR"
"${buildah[@]}" bud --quiet --isolation chroot --network host \
  "${volumes[@]}" \
  --build-arg BASE_IMAGE="$base" \
  --build-arg MODEL_SOURCE=offline \
  --build-arg PIP_EXTRA_ARGS="${indexes[*]}" \
  --tag "$tag" .
"${buildah[@]}" rmi --prune >/dev/null 2>&1 || true  # intermediate stages
"${buildah[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$tag"
