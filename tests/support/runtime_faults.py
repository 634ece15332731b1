"""The function's Lambda handler with one fault injected (``FAULT``), for tests/test_faults_runtime.py.

Runs inside the runtime emulator (``python -m awslambdaric runtime_faults.lambda_handler``). Each fault ends the
process with SIGKILL (or lets the emulator do so at the timeout), as Lambda ends a sandbox: nothing in the function
gets to clean up or answer.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from diarization.aws.app import FunctionApp

app = FunctionApp()
lambda_handler = app.lambda_handler


def killed(*args: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)


def slow(*args: Any, **kwargs: Any) -> Any:
    time.sleep(3600)


FAULT = os.environ.get("FAULT", "")
if FAULT == "slow_diarizing":
    # Work longer than any timeout the test sets: the tiny pipeline is too fast to outlast one.
    app.diarizer.diarize_decoded = slow  # type: ignore[method-assign]
elif FAULT == "killed_while_diarizing":
    # The out-of-memory stand-in (see the test): the kernel's SIGKILL where the memory would peak.
    app.diarizer.diarize_decoded = killed  # type: ignore[method-assign]
elif FAULT == "killed_after_publishing":
    # After the result, the RTTM and the completion event are written; before the idempotency record is
    # saved and before the job is ended.
    notifier = app.diarize_object.publisher.notifier
    assert notifier is not None, "EVENT_BUS_NAME is needed for this fault"
    publish = notifier.publish

    def publish_then_die(outcome: dict[str, Any]) -> bool:
        publish(outcome)
        return bool(killed())

    notifier.publish = publish_then_die  # type: ignore[method-assign]
elif FAULT:
    raise ValueError(f"unknown FAULT {FAULT!r}")
