"""The official Lambda Runtime Interface Emulator (shipped inside the aws-sam-cli wheel) around
`python -m awslambdaric`: the function runs under the real runtime loop, as in a container."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


ARM_MACHINES = ("aarch64", "arm64")
"""What `platform.machine()` says on ARM: Linux reports aarch64, macOS arm64."""


def emulator_name(machine: str | None = None) -> str:
    """The emulator binary for a machine (default: this one); aws-sam-cli ships one per Lambda architecture."""
    machine = (machine if machine is not None else platform.machine()).lower()
    return "aws-lambda-rie-arm64" if machine in ARM_MACHINES else "aws-lambda-rie-x86_64"


def find_emulator(machine: str | None = None) -> Path:
    """$LAMBDA_RIE, else the binary for `machine` (default: this host) inside .venv-tools' aws-sam-cli
    (installed by `make tools`)."""
    if os.environ.get("LAMBDA_RIE"):
        return Path(os.environ["LAMBDA_RIE"])
    name = emulator_name(machine)
    matches = sorted((ROOT / ".venv-tools").glob(f"lib/python*/site-packages/samcli/local/rapid/{name}"))
    if not matches:
        raise FileNotFoundError(
            f"Lambda Runtime Interface Emulator {name} not found: run `make tools` (or set LAMBDA_RIE)."
        )
    return matches[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Emulator:
    """One emulated function: start(), invoke(event) as many times as needed, stop()."""

    def __init__(self, env: dict[str, str], command: list[str] | None = None, cwd: Path = ROOT / "function") -> None:
        self.port = free_port()
        self.runtime_api_port = free_port()  # not the default 9001: emulators must not collide
        self.env = env
        self.command = command or [sys.executable, "-m", "awslambdaric", "diarization.handler.lambda_handler"]
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/2015-03-31/functions/function/invocations"

    def start(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process = subprocess.Popen(  # noqa: S603 - the emulator binary and a fixed command
            [
                str(find_emulator()),
                "--runtime-interface-emulator-address",
                f"127.0.0.1:{self.port}",
                "--runtime-api-address",
                f"127.0.0.1:{self.runtime_api_port}",
                *self.command,
            ],
            cwd=self.cwd,
            env=self.env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the emulator did not listen on {self.port}: {log_path.read_text()[-2000:]}")

    def invoke(self, event: Any, timeout: float = 300) -> tuple[int, Any]:
        """The status and the decoded answer; a timeout's answer is plain text ("Task timed out after …")."""
        request = urllib.request.Request(self.url, data=json.dumps(event).encode(), method="POST")  # noqa: S310 - loopback http
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback http
                return response.status, _decoded(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _decoded(error.read())

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")
