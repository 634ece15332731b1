"""What a use case returns: one typed outcome per object, with `to_dict()` giving the JSON users see
(the Lambda response, the EventBridge event's detail, a job's stored outcome).

`from_dict` reads a stored outcome back (what the idempotency layer remembers is the dict).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Succeeded:
    input: str
    version_id: str | None
    etag: str | None
    output: dict[str, str]
    speaker_count: int
    duration_seconds: float
    timings: dict[str, Any]
    model: dict[str, Any]
    inference_id: str | None = None
    job_id: str | None = None

    status = "succeeded"

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": self.status,
            "input": self.input,
            "version_id": self.version_id,
            "etag": self.etag,
            "output": self.output,
            "speaker_count": self.speaker_count,
            "duration_seconds": self.duration_seconds,
            "timings": self.timings,
            "model": self.model,
        }
        return _with_ids(body, self.inference_id, self.job_id)


@dataclass(frozen=True)
class Failed:
    input: str
    version_id: str | None
    error: dict[str, Any]
    """The error's `code`, `message`, `details`, and the error object's `location`."""
    inference_id: str | None = None
    job_id: str | None = None
    etag: str | None = None
    """The version's ETag when it is known: with `version_id`, which version a job's failure was about."""

    status = "failed"

    def to_dict(self) -> dict[str, Any]:
        body = {"status": self.status, "input": self.input, "version_id": self.version_id, "error": self.error}
        if self.etag is not None:
            body["etag"] = self.etag
        return _with_ids(body, self.inference_id, self.job_id)


@dataclass(frozen=True)
class Skipped:
    input: str
    reason: str
    error: dict[str, Any] | None = None
    """Why the run's job ends failed, when there is one to tell: its version was superseded (INPUT_CHANGED)."""
    job_id: str | None = None

    status = "skipped"

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "reason": self.reason, "input": self.input}
        if self.error is not None:
            body["error"] = self.error
        return _with_ids(body, None, self.job_id)


@dataclass(frozen=True)
class Routed:
    """Sent to the GPU endpoint, or fanned out to the state machine (`endpoint` is then its ARN, `inference_id` the
    execution's name); the completion use case writes the result when it reports back."""

    input: str
    version_id: str | None
    etag: str | None
    endpoint: str
    reason: str
    duration_seconds: float
    inference_id: str
    output_location: str | None = None
    failure_location: str | None = None
    job_id: str | None = None

    status = "routed"

    def to_dict(self) -> dict[str, Any]:
        body = {
            "status": self.status,
            "input": self.input,
            "version_id": self.version_id,
            "etag": self.etag,
            "endpoint": self.endpoint,
            "reason": self.reason,
            "duration_seconds": self.duration_seconds,
            "inference_id": self.inference_id,
            "output_location": self.output_location,
            "failure_location": self.failure_location,
        }
        return _with_ids(body, None, self.job_id)


Outcome = Succeeded | Failed | Skipped | Routed


def with_job(outcome: Outcome, job_id: str | None) -> Outcome:
    return outcome if job_id is None else replace(outcome, job_id=job_id)


def from_dict(body: dict[str, Any]) -> Outcome:
    fields = {key: value for key, value in body.items() if key != "status"}
    status = body.get("status")
    if status == "succeeded":
        return Succeeded(**fields)
    if status == "failed":
        return Failed(**fields)
    if status == "routed":
        return Routed(**fields)
    if status == "skipped":
        return Skipped(**fields)
    raise ValueError(f"not an outcome: status {status!r}")


def _with_ids(body: dict[str, Any], inference_id: str | None, job_id: str | None) -> dict[str, Any]:
    if inference_id is not None:
        body["inference_id"] = inference_id
    if job_id is not None:
        body["job_id"] = job_id
    return body
