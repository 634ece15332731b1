#!/usr/bin/env bash
# Make sure a Docker engine answers here: install Debian's docker.io (and mmdebstrap, which makes the local base
# image) when missing, start dockerd when it is not running, and wait for its socket. A fresh CI machine has
# neither; a developer machine with Docker running is left alone. Needs root only for what it has to install/start.
set -euo pipefail
docker_cli=/usr/bin/docker
if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io mmdebstrap >/dev/null
fi
[ -x "$docker_cli" ] || docker_cli=$(command -v docker)
if "$docker_cli" info >/dev/null 2>&1; then
  exit 0
fi
log=${DOCKERD_LOG:-/tmp/dockerd.log}
echo "starting dockerd (log: $log)"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  "$docker_cli" info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not start; last lines of $log:" >&2
tail -20 "$log" >&2
exit 1
