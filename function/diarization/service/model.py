"""The values a use case takes: which object, with which hints, for which job, and the invocation it runs in."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diarization.service.locations import ObjectRef


@dataclass(frozen=True)
class ObjectRequest:
    """Diarize one object: what every trigger (S3, SQS, SNS, EventBridge, job message, direct) turns into."""

    ref: ObjectRef
    hints: Mapping[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    key_may_be_encoded: bool = False
    """EventBridge documents raw keys, but URL-encoded ones have been seen: try both."""
    sequencer: str | None = None
    """The S3 event's `sequencer`: orders the events of one key (see ``diarization.service.ordering``)."""


@dataclass(frozen=True)
class Invocation:
    """Per-call state, passed as an argument: when this call must be done by, and its id for error objects."""

    deadline: float | None = None
    """`time.monotonic()` value at which the host stops the call (None: no limit known)."""
    request_id: str | None = None

    @classmethod
    def from_remaining(cls, remaining_seconds: float | None, request_id: str | None) -> Invocation:
        deadline = None if remaining_seconds is None else time.monotonic() + remaining_seconds
        return cls(deadline, request_id)

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()
