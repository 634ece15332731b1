"""In-memory implementations of the service's ports, for the fast tier (no moto, no Docker).

They follow the protocols' documented contracts (e.g. a job ends once), so a test against them
checks the use case, not a stand-in's quirks; the moto tests check the AWS implementations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from diarization.core.hints import SpeakerHints
from diarization.errors import InputChangedError, InputNotFoundError
from diarization.service.locations import ObjectRef
from diarization.service.ordering import Order, not_older, version_of
from diarization.service.routing import STEPFUNCTIONS, Routing
from diarization.service.webhooks import WEBHOOK_RESEND_AFTER_SECONDS

log = logging.getLogger("tests.fakes")


@dataclass
class Version:
    data: bytes
    etag: str
    version_id: str | None
    last_modified: str


@dataclass
class MemoryStore:
    """Buckets of keys; each key keeps its versions (the last is current), like a versioned S3 bucket.
    Unversioned: `versioned=False` keeps only the current one and reports no version ids."""

    versioned: bool = False
    objects: dict[tuple[str, str], list[Version]] = field(default_factory=dict)
    clock: int = 0
    """Last-Modified of the next put: one tick each, so versions never tie."""

    def put(self, bucket: str, key: str, data: bytes) -> Version:
        versions = self.objects.setdefault((bucket, key), [])
        self.clock += 1
        version_id = f"v{len(versions) + 1}" if self.versioned else None
        version = Version(data, hashlib.md5(data).hexdigest(), version_id, f"{self.clock:012d}")  # noqa: S324
        if self.versioned:
            versions.append(version)
        else:
            versions[:] = [version]
        return version

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(key for (b, key) in self.objects if b == bucket and key.startswith(prefix))

    def _find(self, ref: ObjectRef) -> Version:
        versions = self.objects.get((ref.bucket, ref.key))
        if not versions:
            raise InputNotFoundError(f"{ref.uri} does not exist.", uri=ref.uri)
        if ref.version_id:
            for version in versions:
                if version.version_id == ref.version_id:
                    return version
            raise InputNotFoundError(f"{ref.uri} has no version {ref.version_id}.", uri=ref.uri)
        current = versions[-1]
        if ref.etag and ref.etag != current.etag:
            raise InputChangedError(f"{ref.uri} changed.", uri=ref.uri, expected_etag=ref.etag)
        return current

    def head(self, ref: ObjectRef) -> tuple[int, ObjectRef]:
        version = self._find(ref)
        exact = ObjectRef(
            ref.bucket, ref.key, ref.version_id or version.version_id, version.etag, version.last_modified
        )
        return len(version.data), exact

    def download(self, ref: ObjectRef, path: Path) -> None:
        path.write_bytes(self._find(ref).data)

    def get_json(self, bucket: str, key: str) -> dict[str, Any]:
        value = json.loads(self._find(ObjectRef(bucket, key)).data)
        assert isinstance(value, dict)
        return value

    def put_json(self, bucket: str, key: str, body: dict[str, Any]) -> None:
        self.put_text(bucket, key, json.dumps(body), "application/json")

    def put_text(self, bucket: str, key: str, text: str, content_type: str = "text/plain") -> None:
        self.put(bucket, key, text.encode())

    def put_bytes(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        self.put(bucket, key, body)

    def put_stream(self, bucket: str, key: str, body: BinaryIO, content_type: str) -> None:
        self.put(bucket, key, body.read())

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self._find(ObjectRef(bucket, key)).data

    def get_range(self, bucket: str, key: str, start: int, stop: int) -> bytes:
        return self._find(ObjectRef(bucket, key)).data[start:stop]

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def presign_post(self, bucket: str, key: str, expires: int, max_bytes: int) -> dict[str, Any]:
        return {"url": f"https://{bucket}.memory", "fields": {"key": key, "max_bytes": str(max_bytes)}}

    def presign_get(self, bucket: str, key: str, expires: int) -> str:
        return f"https://{bucket}.memory/{key}?expires={expires}"


@dataclass
class MemoryJobs:
    """queued -> running -> one terminal state, once; deadlines and routings like the DynamoDB store's."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    inferences: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_deadline_seconds: float = 3600.0
    gpu_deadline_seconds: float = 7200.0

    def create(self, job_id: str, **fields: Any) -> None:
        """`owner` is optional here, for tests of the object use cases; fields that are None are not stored."""
        kept = {name: value for name, value in fields.items() if value is not None}
        self.jobs[job_id] = {"job_id": job_id, "status": "queued", **kept}

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id)

    def mark_running(self, job_id: str, run: ObjectRef) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job["status"] not in ("queued", "running"):
            return False
        version = version_of(run)
        recorded = (job.get("run_input"), job.get("run_version"))
        if recorded[0] is not None and (recorded[0] != run.uri or (version and recorded[1] != version)):
            return False  # started on another run
        job.setdefault("run_input", run.uri)
        job.setdefault("run_version", version)
        job["status"] = "running"
        job.setdefault("deadline", time.time() + self.job_deadline_seconds)
        return True

    def finish(self, job_id: str, outcome: dict[str, Any]) -> bool:
        """With a callback URL, the same change records the webhook in the outbox (`resend_at`)."""
        job = self.jobs.get(job_id)
        if job is None or job["status"] not in ("queued", "running"):
            return False
        job["status"] = "succeeded" if outcome.get("status") == "succeeded" else "failed"
        job["outcome"] = outcome
        job.pop("deadline", None)
        if job.get("callback_url"):
            job["webhook"] = {"status": "pending"}
            job["resend_at"] = time.time() + WEBHOOK_RESEND_AFTER_SECONDS
        return True

    def unqueued_webhooks(self, now: float) -> list[str]:
        return sorted(job_id for job_id, job in self.jobs.items() if job.get("resend_at", now) < now)

    def webhook_queued(self, job_id: str) -> None:
        self.jobs[job_id].pop("resend_at", None)

    def record_webhook(self, job_id: str, state: dict[str, Any]) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job["status"] in ("succeeded", "failed"):
            job["webhook"] = state
            job.pop("resend_at", None)

    def end_overdue(self, job_id: str, outcome: dict[str, Any], now: float) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job["status"] != "running" or not job.get("deadline", now) < now:
            return False
        return self.finish(job_id, outcome)

    def overdue_jobs(self, now: float) -> list[str]:
        return sorted(
            job_id for job_id, job in self.jobs.items() if job["status"] == "running" and job.get("deadline", now) < now
        )

    def record_routing(self, routing: Routing) -> None:
        inference = self.inferences.setdefault(routing.inference_id, {"waiting": set()})
        if routing.engine == STEPFUNCTIONS and "outcome" in inference:
            return  # the same run's execution has ended: recording it again does not reopen it
        inference.pop("outcome", None)
        now = time.time()
        inference["routing"] = replace(routing, submitted_at=now, deadline=now + self.gpu_deadline_seconds)

    def routing(self, inference_id: str) -> Routing | None:
        inference = self.inferences.get(inference_id, {})
        routing = inference.get("routing")
        return None if routing is None else replace(routing, ended="outcome" in inference)

    def overdue_routings(self, now: float) -> list[Routing]:
        found = [self.routing(inference_id) for inference_id in sorted(self.inferences)]
        return [r for r in found if r is not None and not r.ended and r.deadline is not None and r.deadline < now]

    def wait_for_inference(self, job_id: str, inference_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        if job is not None and job["status"] == "running":
            job.pop("deadline", None)  # the inference's deadline ends it now
        inference = self.inferences.setdefault(inference_id, {"waiting": set()})
        inference["waiting"].add(job_id)
        return inference.get("outcome")

    def end_inference(self, inference_id: str, outcome: dict[str, Any]) -> list[str]:
        inference = self.inferences.setdefault(inference_id, {"waiting": set()})
        inference.setdefault("outcome", outcome)
        return sorted(inference["waiting"])


@dataclass
class MemoryOrdering:
    """The ordering record's contract (see DynamoOrdering.claim), in a dict."""

    records: dict[tuple[str, str], tuple[Order, bool]] = field(default_factory=dict)

    def claim(self, bucket: str, key: str, order: Order, succeeded: bool) -> bool:
        record = self.records.get((bucket, key))
        if record is not None:
            held, held_ok = record
            same = held.version == order.version
            later = not_older(order, held)
            allowed = (same or later) if succeeded else ((same and not held_ok) or (not same and later))
            if not allowed:
                return False
        self.records[(bucket, key)] = (order, succeeded)
        return True


@dataclass
class MemoryJobQueue:
    sent: list[tuple[str, ObjectRef, SpeakerHints]] = field(default_factory=list)

    def send(self, job_id: str, ref: ObjectRef, hints: SpeakerHints) -> None:
        self.sent.append((job_id, ref, hints))


@dataclass
class MemoryNotifier:
    published: list[dict[str, Any]] = field(default_factory=list)

    def publish(self, outcome: dict[str, Any]) -> bool:
        self.published.append(outcome)
        return True


@dataclass
class FakeRouter:
    """Remembers what it submitted (when to route is the service's policy: ``DiarizeObject``'s threshold)."""

    endpoint_name: str = "gpu-endpoint"
    submitted: list[tuple[ObjectRef, SpeakerHints, str]] = field(default_factory=list)
    embeddings_asked: list[bool] = field(default_factory=list)

    def submit(
        self, ref: ObjectRef, hints: SpeakerHints, inference_id: str, *, speaker_embeddings: bool = False
    ) -> dict[str, Any]:
        self.submitted.append((ref, hints, inference_id))
        self.embeddings_asked.append(speaker_embeddings)
        return {"inference_id": inference_id, "output_location": f"s3://gpu/out/{inference_id}.out"}


@dataclass
class FakeFanOut:
    """Step Functions' StartExecution: a name starts once."""

    state_machine: str = "arn:aws:states:us-east-1:123456789012:stateMachine:fanout"
    started: list[str] = field(default_factory=list)

    def start(self, name: str) -> bool:
        if name in self.started:
            return False
        self.started.append(name)
        return True


class NullSpan:
    def put_annotation(self, key: str, value: Any) -> None:
        pass


@dataclass
class RecordingTelemetry:
    metrics: list[tuple[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def metric(self, name: str, unit: str, value: float) -> None:
        self.metrics.append((name, value))

    def failure(self, code: str) -> None:
        self.failures.append(code)

    @contextmanager
    def span(self, name: str) -> Iterator[NullSpan]:
        yield NullSpan()
