"""What the use cases need from the outside, as small protocols.

AWS implementations live in :mod:`diarization.aws_ports`; the fast tests use in-memory ones
(``tests/fakes.py``). Each protocol names only the calls the service makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from diarization.core.hints import SpeakerHints
from diarization.service.locations import ObjectRef
from diarization.service.ordering import Order
from diarization.service.routing import Routing


class ObjectStore(Protocol):
    def head(self, ref: ObjectRef) -> tuple[int, ObjectRef]:
        """Size and the exact version to read; raises InputNotFoundError, AccessDeniedError, InputChangedError."""

    def download(self, ref: ObjectRef, path: Path) -> None: ...

    def get_json(self, bucket: str, key: str) -> dict[str, Any]: ...

    def put_json(self, bucket: str, key: str, body: dict[str, Any]) -> None: ...

    def put_text(self, bucket: str, key: str, text: str, content_type: str = "text/plain") -> None: ...

    def put_bytes(self, bucket: str, key: str, body: bytes, content_type: str) -> None: ...

    def put_stream(self, bucket: str, key: str, body: BinaryIO, content_type: str) -> None:
        """Read `body` to its end in parts (a multipart upload for large bodies), never holding a second copy."""

    def get_bytes(self, bucket: str, key: str) -> bytes: ...

    def get_range(self, bucket: str, key: str, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of the object (one ranged GET)."""

    def delete(self, bucket: str, key: str) -> None: ...

    def presign_post(self, bucket: str, key: str, expires: int, max_bytes: int) -> dict[str, Any]:
        """A form (``url`` and ``fields``) with which anyone may upload one file of 1 to `max_bytes` bytes to exactly
        that key, for `expires` seconds: the store refuses anything else, so an oversize upload never reaches us."""

    def presign_get(self, bucket: str, key: str, expires: int) -> str:
        """A URL with which anyone may read that object for `expires` seconds."""


class JobStore(Protocol):
    def create(self, job_id: str, *, owner: str, **fields: Any) -> object:
        """A new job, ``queued``, that only `owner` may see; `job_id` is fresh
        (``diarization.service.jobs.new_job_id``), never an existing job's. Fields that are None are not stored."""

    def get(self, job_id: str) -> dict[str, Any] | None: ...

    def mark_running(self, job_id: str, run: ObjectRef) -> bool:
        """Start the job on `run`, the input version it diarizes. False when there is no such job, it has already
        ended, or it has started on another run: a job runs once. The first start records `run`'s input (its URI) and
        version (version id, else ETag; "" when it could not be read) as the job's `run_input` and `run_version`, and
        sets the job's deadline; a start with the same input and version (a redelivery) is the same run, and one
        without a version matches on the input alone."""

    def finish(self, job_id: str, outcome: dict[str, Any]) -> bool:
        """False when the job had already ended: a job ends once."""

    def end_overdue(self, job_id: str, outcome: dict[str, Any], now: float) -> bool:
        """`finish`, only while the job is running past its deadline."""

    def overdue_jobs(self, now: float) -> list[str]:
        """Running jobs whose deadline is before `now` (jobs waiting for a routed inference have none)."""

    def record_routing(self, routing: Routing) -> None:
        """Remember what was routed (the same id again starts over); sets its submission time and deadline."""

    def routing(self, inference_id: str) -> Routing | None: ...

    def overdue_routings(self, now: float) -> list[Routing]:
        """Routings without an outcome whose deadline is before `now`."""

    def wait_for_inference(self, job_id: str, inference_id: str) -> dict[str, Any] | None:
        """The job ends with that GPU inference (whose deadline is now the job's); its outcome if it has ended."""

    def end_inference(self, inference_id: str, outcome: dict[str, Any]) -> list[str]:
        """Record the inference's outcome (the first one stays); the jobs waiting for it."""


class OrderingRecord(Protocol):
    """One record per input key: the order of the version whose outputs were written last."""

    def claim(self, bucket: str, key: str, order: Order, succeeded: bool) -> bool:
        """Conditionally take the key for `order`; False: a newer version (or a success of this one) owns it."""


class Notifier(Protocol):
    def publish(self, outcome: dict[str, Any]) -> bool: ...


class GpuRouter(Protocol):
    """The GPU endpoint: it only submits; when a file goes there is ``diarization.service.long_audio``'s policy."""

    endpoint_name: str

    def submit(
        self, ref: ObjectRef, hints: SpeakerHints, inference_id: str, *, speaker_embeddings: bool = False
    ) -> dict[str, Any]:
        """`speaker_embeddings`: the output carries each speaker's centroid (for matching voiceprints afterwards)."""


class FanOut(Protocol):
    """The Step Functions state machine that diarizes long audio in shards (see ``diarization.service.fanout``)."""

    state_machine: str

    def start(self, name: str) -> bool:
        """Start the execution `name`; False when an execution of that name exists already (the same run)."""


class Span(Protocol):
    def put_annotation(self, key: str, value: Any) -> None: ...


class Telemetry(Protocol):
    """Metrics and trace spans; the Lambda host maps them to Powertools (EMF metrics, X-Ray subsegments)."""

    def metric(self, name: str, unit: str, value: float) -> None:
        """`unit`: "Count", "Seconds" or "None"."""

    def failure(self, code: str) -> None:
        """One failure, by error code (its own metric dimension)."""

    def span(self, name: str) -> AbstractContextManager[Span]: ...


class Log(Protocol):
    """The subset of `logging.Logger` (and Powertools' Logger) the service uses."""

    def info(self, msg: object, *args: object, extra: Mapping[str, object] | None = None) -> None: ...

    def warning(self, msg: object, *args: object, extra: Mapping[str, object] | None = None) -> None: ...


class JobQueue(Protocol):
    """The work queue, which the bucket's notifications reach too: one message per job for an object that is already
    in the bucket (an upload's job runs when its own notification arrives)."""

    def send(self, job_id: str, ref: ObjectRef, hints: SpeakerHints) -> None:
        """Queue `ref` for the job, with its hints. Delivered at least once: the object use case makes a second
        delivery find the job running or ended."""


class WebhookQueue(Protocol):
    def enqueue(self, delivery: dict[str, Any]) -> None: ...


class WebhookOutbox(Protocol):
    """Deliveries recorded by the write that ended their job, until they are known to be queued: nothing is lost
    between a job's end and its webhook's queueing."""

    def unqueued_webhooks(self, now: float) -> list[str]:
        """Ids of ended jobs whose delivery was recorded before `now` minus the grace period and never queued."""

    def webhook_queued(self, job_id: str) -> None:
        """The job's delivery is in the queue: it leaves the outbox."""


class WebhookRecord(Protocol):
    def record_webhook(self, job_id: str, state: dict[str, Any]) -> None:
        """What happened to the job's webhook so far (shown as `webhook` by GET /jobs/{id})."""


class WebhookSender(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """The receiver's HTTP status; raises WebhookDeliveryError when no answer came."""
