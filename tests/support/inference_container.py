"""The inference container, started the way SageMaker starts it: the image's entrypoint with `serve`."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from infra.runtime_emulator import ROOT, free_port


class Container:
    """`python -m diarization.entrypoint serve`: the image's entrypoint with SageMaker's argument."""

    def __init__(self, model_dir: Path, log: Path, **env: str) -> None:
        self.port = free_port()
        self.log = log
        full_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "function"),
            "MODEL_DIR": str(model_dir),
            "NUM_THREADS": "2",
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "diarization.entrypoint", "serve"],
            env=full_env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self._wait_for_port()

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/ping")
                return
            except ConnectionRefusedError:
                time.sleep(0.05)
        raise RuntimeError(self.log.read_text())

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.request("GET", "/ping")
            if status == 200:
                return dict(body)
            time.sleep(0.2)
        raise TimeoutError(self.log.read_text())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)
