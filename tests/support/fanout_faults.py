"""The function's Lambda handler with a crash injected into fan-out shard steps, for tests/test_fanout_aws.py.

Runs inside the runtime emulator (``python -m awslambdaric fanout_faults.lambda_handler``). The fault is chosen at
invocation time by ``$FAULT_DIR/mode`` (``once:INDEX`` or ``always:INDEX``; no file, no fault), so one emulated
function serves every test. A crash is the kernel's SIGKILL, as Lambda ends a sandbox that runs out of memory: nothing
in the function answers, the emulator reports ``Runtime.ExitError`` and Step Functions sees ``Lambda.Unknown``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from diarization.aws.app import FunctionApp
from diarization.service.model import Invocation

app = FunctionApp()
steps = app.fanout_steps
assert steps is not None, "FANOUT_STATE_MACHINE_ARN and FANOUT_WORK_BUCKET are needed here"
FAULT_DIR = Path(os.environ["FAULT_DIR"])


def crash_if_asked(event: dict[str, Any]) -> None:
    mode = FAULT_DIR / "mode"
    if event.get("step") != "shard" or not mode.is_file():
        return
    kind, index = mode.read_text().strip().split(":")
    if event.get("index") != int(index):
        return
    marker = FAULT_DIR / f"crashed-{event.get('execution')}-{index}"
    if kind == "once" and marker.exists():
        return
    marker.touch()
    os.kill(os.getpid(), signal.SIGKILL)


def faulty_steps(event: dict[str, Any], invocation: Invocation) -> dict[str, Any]:
    crash_if_asked(event)
    return steps(event, invocation)


app.fanout_steps = faulty_steps  # type: ignore[assignment]
lambda_handler = app.lambda_handler
