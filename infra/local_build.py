"""Build the function image with Docker (BuildKit) where no registry and no PyTorch index can be reached.

This is the path a Lambda user takes — `sam build` with BuildKit, or `docker build` for the image alone — with
three local stand-ins for what a user's build machine downloads:
- the base image: Debian bookworm with Python 3.11, bootstrapped by mmdebstrap from Debian's package archive and
  imported into Docker as ``local/debian-python:bookworm`` (public base images cannot be pulled here);
- the Python packages: the locked runtime requirements (and moto, for the local AWS container) downloaded once by the
  host's pip into ``.build/wheelhouse`` and served to the build over loopback only (``--network=host``; pip then
  installs with ``--no-index``, so the build reaches nothing else);
- the model: the untrained production-architecture pipeline (``MODEL_SOURCE=offline``), since the Hugging Face hub
  is unreachable.

Usage (the Makefile's `image`, `build` and the image tests call these):
    python -m infra.local_build image [TAG]        # docker build of the `function` target
    python -m infra.local_build sam-build [ARGS]   # sam build --use-buildkit with the local parameter overrides
    python -m infra.local_build moto-image         # the local AWS (moto server) as a container image
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / ".build"
BASE_IMAGE = "local/debian-python:bookworm"
MOTO_IMAGE = "local/moto:5.2.5"
MOTO_REQUIREMENT = "moto[server]==5.2.5"
WHEELHOUSE = BUILD / "wheelhouse"
SHIM_DIR = ROOT / "infra/docker/bin"
TOOLS_BIN = ROOT / ".venv-tools/bin"
WHEELHOUSE_PORT = 47831
"""Fixed, because the index URL is part of a build argument and so of the dependency layer's cache key."""


@functools.cache
def tool_env() -> dict[str, str]:
    """This environment, with `docker buildx` available: the shim goes first on PATH only if the engine lacks it."""
    env = dict(os.environ, SAM_CLI_TELEMETRY="0", DOCKER_BUILDKIT="1")
    probe = subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False)  # noqa: S607
    if probe.returncode != 0:
        env["PATH"] = f"{SHIM_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["PATH"] = f"{TOOLS_BIN}{os.pathsep}{env['PATH']}"  # sam from `make tools`
    return env


def run(*command: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, check=True, env=tool_env(), **kwargs)  # type: ignore[call-overload,no-any-return]  # noqa: S603


def image_exists(name: str) -> bool:
    command = ["docker", "image", "inspect", name]
    probe = subprocess.run(command, capture_output=True, check=False, env=tool_env())  # noqa: S603
    return probe.returncode == 0


def ensure_base_image() -> None:
    """Debian bookworm + python3 + venv, as a Docker image (~30 s once; 212 MB)."""
    if image_exists(BASE_IMAGE):
        return
    if not shutil.which("mmdebstrap"):
        sys.exit("mmdebstrap is missing: apt-get install -y mmdebstrap (or run infra/docker/ensure-docker.sh)")
    print(f"+ mmdebstrap bookworm | docker import - {BASE_IMAGE}", flush=True)
    bootstrap = subprocess.Popen(
        ["mmdebstrap", "--quiet", "--variant=apt", "--include=python3,python3-venv,ca-certificates", "bookworm", "-"],  # noqa: S607
        stdout=subprocess.PIPE,
    )
    path = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    run("docker", "import", "-c", path, "-", BASE_IMAGE, stdin=bootstrap.stdout)
    if bootstrap.wait() != 0:
        sys.exit("mmdebstrap failed")


def ensure_wheelhouse() -> Path:
    """Every wheel the images install, fetched once by the host's pip (which knows this machine's indexes)."""
    lock = (ROOT / "requirements/runtime.txt").read_bytes() + MOTO_REQUIREMENT.encode()
    stamp = WHEELHOUSE / f".complete-{hashlib.sha256(lock).hexdigest()[:16]}"
    if stamp.exists():
        return WHEELHOUSE
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(WHEELHOUSE), "--only-binary", ":all:"]
    run(*pip, "-r", str(ROOT / "requirements/runtime.txt"))
    run(*pip, MOTO_REQUIREMENT, "--constraint", str(ROOT / "requirements/dev.txt"))
    for old in WHEELHOUSE.glob(".complete-*"):
        old.unlink()
    stamp.touch()
    return WHEELHOUSE


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def served(directory: Path) -> Iterator[str]:
    """Serve a directory read-only on a free loopback port for the duration of a build."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELHOUSE_PORT), handler)
    except OSError:  # taken: any port works, but the dependency layer's cache is then missed once
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def pip_args(url: str) -> str:
    return f"--no-index --find-links {url}"


def build_image(tag: str, target: str = "function") -> None:
    ensure_base_image()
    with served(ensure_wheelhouse()) as url:
        run(
            "docker", "build", "--network=host", "--target", target, "--tag", tag,
            "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
            "--build-arg", "MODEL_SOURCE=offline",
            "--build-arg", f"PIP_EXTRA_ARGS={pip_args(url)}",
            str(ROOT),
        )  # fmt: skip


def sam_build(extra: list[str]) -> None:
    """`sam build` exactly as a user runs it, with the template's build parameters pointed at the stand-ins."""
    ensure_base_image()
    with served(ensure_wheelhouse()) as url:
        overrides = {
            "ModelSource": "offline",
            "BaseImage": BASE_IMAGE,
            "PipExtraArgs": pip_args(url),
            "BuildNetwork": "host",
            "ImageTarget": "local",
        }
        # Values with spaces need quotes inside the one --parameter-overrides string.
        joined = " ".join(f'{name}="{value}"' for name, value in overrides.items())
        run("sam", "build", "--use-buildkit", "--parameter-overrides", joined, *extra, cwd=ROOT)


def build_moto_image() -> None:
    if image_exists(MOTO_IMAGE):
        return
    ensure_base_image()
    with served(ensure_wheelhouse()) as url:
        run(
            "docker", "build", "--network=host", "--tag", MOTO_IMAGE,
            "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
            "--build-arg", f"PIP_EXTRA_ARGS={pip_args(url)}",
            "--build-arg", f"MOTO_REQUIREMENT={MOTO_REQUIREMENT}",
            "--file", str(ROOT / "infra/docker/moto.Dockerfile"),
            str(ROOT / "infra/docker"),
        )  # fmt: skip


def main(argv: list[str]) -> None:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "image":
        build_image(rest[0] if rest else "diarization:local")
    elif command == "sam-build":
        sam_build(rest)
    elif command == "moto-image":
        build_moto_image()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
