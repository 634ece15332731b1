"""Create a job (the API's POST /jobs): for an object already in the input bucket, queued at once; or for a file the
caller uploads through the form it gets back, which runs when the upload's own S3 notification arrives.

A job belongs to its owner (the API's caller identity): to anyone else it, its results and its upload do not exist.
An object of the shared input space (anything outside the upload folders) has shared results: whoever's job runs
on it last writes them, and every caller's job on it points to them. So a job naming voiceprints must run on the
caller's own upload (VOICEPRINTS_ON_SHARED_INPUT otherwise): speakers' names are never written where another
caller reads.
What the job runs with is fixed now, in its record: hints, output formats, voiceprints (resolved before the request
gets here, so a typo or another model's voiceprint fails the request, not the job, and a voiceprint re-enrolled or
deleted meanwhile does not change it) and the callback URL.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diarization.core.hints import SpeakerHints
from diarization.core.voiceprints import Voiceprint
from diarization.errors import (
    ConfigurationError,
    InputNotFoundError,
    InvalidParameterError,
    InvalidRequestError,
    VoiceprintsOnSharedInputError,
)
from diarization.service.deps import Shared
from diarization.service.locations import Locations, ObjectRef, check_safe_name
from diarization.service.ports import JobQueue, JobStore


class _NotSent(enum.Enum):
    NOT_SENT = "not sent"


NOT_SENT = _NotSent.NOT_SENT
"""A field the caller did not send (a JSON null is sent: it gets that value's error)."""


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class JobRequest:
    """What the caller asked for. `s3_uri`, `upload` and `filename` are as sent (NOT_SENT: absent), checked by
    :class:`CreateJob`: either `s3_uri` (an object already under the input prefix), or `upload` true with `filename`."""

    owner: str
    """The caller (``diarization.aws.api.owner_of``): the only one who may see the job."""
    hints: SpeakerHints = field(default_factory=SpeakerHints)
    s3_uri: object = NOT_SENT
    upload: object = NOT_SENT
    filename: object = NOT_SENT
    formats: tuple[str, ...] | None = None
    """Validated output formats; None: the deployment's (OUTPUT_FORMATS)."""
    callback_url: str | None = None
    """Checked against the deployment's webhook policy already."""
    voiceprints: tuple[Voiceprint, ...] = ()


@dataclass(frozen=True)
class CreatedJob:
    job_id: str
    input: ObjectRef
    result: dict[str, str]
    """Where its outputs will be: each selected format's URI, and `error` (the error object's)."""
    upload: dict[str, Any] | None
    """The upload form (``url``, ``fields``, ``method``, ``expires_in``, ``max_bytes``); None: queued already."""
    callback_url: str | None


def caller_input(locations: Locations, jobs: JobStore | None, uri: object, owner: str) -> ObjectRef:
    """An `s3_uri` the caller may use: anything under the input prefix (the deployment's shared space) except the
    uploads of other callers' jobs, which answer exactly like a missing object, whether they exist or not."""
    ref = locations.parse_input_uri(uri)
    job_id = locations.job_id_of_upload(ref)
    if job_id is not None:
        job = jobs.get(job_id) if jobs else None
        if job is None or job.get("owner") != owner:
            raise InputNotFoundError(f"{ref.uri} does not exist, or is not yours.", uri=ref.uri)
    return ref


class CreateJob:
    def __init__(
        self,
        shared: Shared,
        queue: JobQueue | None,
        *,
        formats: tuple[str, ...],
        url_expiry_seconds: int,
        max_upload_bytes: int,
        new_id: Callable[[], str] = new_job_id,
    ) -> None:
        """`queue`: None when the deployment has no work queue (WORK_QUEUE_URL); `formats`: the deployment's
        (OUTPUT_FORMATS); `url_expiry_seconds` and `max_upload_bytes`: the upload form's limits."""
        self.shared = shared
        self.queue = queue
        self.formats = formats
        self.url_expiry_seconds = url_expiry_seconds
        self.max_upload_bytes = max_upload_bytes
        self.new_id = new_id

    def __call__(self, request: JobRequest) -> CreatedJob:
        jobs = self.shared.require_jobs()
        job_id = self.new_id()
        ref, upload = self._source(request, job_id)
        formats = self.formats if request.formats is None else request.formats
        outputs = self.shared.locations.outputs(ref, formats)
        result = {**outputs.output_uris(), "error": outputs.uri(outputs.error_key)}
        voiceprints = request.voiceprints
        jobs.create(
            job_id,
            owner=request.owner,
            input=ref.uri,
            hints=request.hints.to_dict(),
            formats=list(formats),
            result=result,
            upload=upload is not None,
            callback_url=request.callback_url,
            voiceprints=json.dumps([voiceprint.to_dict() for voiceprint in voiceprints]) if voiceprints else None,
        )
        if upload is None and self.queue is not None:
            self.queue.send(job_id, ref, request.hints)
        self.shared.log.info("job created", extra={"job_id": job_id, "input": ref.uri})
        return CreatedJob(job_id, ref, result, upload, request.callback_url)

    def _source(self, request: JobRequest, job_id: str) -> tuple[ObjectRef, dict[str, Any] | None]:
        """The input, and its upload form (None: the object exists and the job is queued)."""
        if request.s3_uri is not NOT_SENT:
            if request.upload is not NOT_SENT or request.filename is not NOT_SENT:
                raise InvalidRequestError('Give either "s3_uri", or "upload": true with "filename", not both.')
            ref = self._existing(request.s3_uri, request.owner)
            if request.voiceprints and self.shared.locations.job_id_of_upload(ref) is None:
                raise VoiceprintsOnSharedInputError(
                    f"{ref.uri} is in the shared input space: its results are every caller's, and a job naming "
                    "voiceprints would write your speakers' names into them. Upload the file for this job "
                    '("upload": true; its results are yours alone), name a file in one of your own upload folders, '
                    "or use POST /diarize for short audio (its answer is not stored).",
                    uri=ref.uri,
                )
            return ref, None
        if request.upload is True:
            return self._upload(request.filename, job_id)
        raise InvalidRequestError('Give "s3_uri", or "upload": true with "filename".')

    def _existing(self, uri: object, owner: str) -> ObjectRef:
        ref = caller_input(self.shared.locations, self.shared.jobs, uri, owner)
        if self.queue is None:
            raise ConfigurationError("WORK_QUEUE_URL is not set: jobs for existing objects cannot be queued.")
        self.shared.store.head(ref)  # 404/403 now, not later in the job
        return ref

    def _upload(self, filename: object, job_id: str) -> tuple[ObjectRef, dict[str, Any]]:
        if not isinstance(filename, str) or "/" in filename:
            raise InvalidParameterError('"filename" must be a file name without "/".', parameter="filename")
        check_safe_name(filename, "filename")
        if "$" in filename:
            raise InvalidParameterError(
                '"filename" must not contain "$": in an upload form S3 reads "${filename}" as the name of whatever '
                "file is posted, so the form would take any name in the job's folder.",
                parameter="filename",
                character="$",
            )
        locations = self.shared.locations
        bucket = locations.settings.input_bucket
        if not bucket:
            raise ConfigurationError("INPUT_BUCKET is not set: upload URLs cannot be issued.")
        ref = locations.check(ObjectRef(bucket, locations.upload_key(job_id, filename)))  # before any URL or job
        expiry, max_bytes = self.url_expiry_seconds, self.max_upload_bytes
        form = self.shared.store.presign_post(ref.bucket, ref.key, expiry, max_bytes)
        return ref, {**form, "method": "POST", "expires_in": expiry, "max_bytes": max_bytes}
