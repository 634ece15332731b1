"""HTTP API (API Gateway v2, IAM-authorised): submit jobs, poll them, or diarize short audio synchronously.

POST /jobs      {"s3_uri": ...} or {"upload": true, "filename": ...} (+ hints, formats, "callback_url") -> 202 job
GET  /jobs/{id}                                                                -> job status
POST /diarize   {"audio_base64": ..., "filename"?} or {"s3_uri": ...} (+ hints) -> 200 result, if it fits 30 s
                (+ "voiceprints": [names] to name the speakers, "speaker_embeddings": true for the centroids)
POST /voiceprints {"name": ..., "audio_base64" or "s3_uri": ...}              -> 201 voiceprint (sample <= 30 s)
GET|DELETE /voiceprints/{name}                                                 -> 200 voiceprint | 200 {deleted}

Every user mistake is a 4xx with ``{"error": {"code", "message"}}``; never a 500. A job belongs to the caller
that created it (:func:`owner_of`): to anyone else it, its results and its upload do not exist (404).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from diarization.aws.settings import AwsSettings
from diarization.aws_ports.dynamodb_jobs import DynamoJobStore, new_job_id
from diarization.aws_ports.s3 import S3Store
from diarization.core.hints import HINT_NAMES, SpeakerHints
from diarization.core.voiceprints import Voiceprint, check_compatible, check_name
from diarization.errors import (
    AudioTooLargeError,
    ConfigurationError,
    DiarizationError,
    InputNotFoundError,
    InvalidParameterError,
    InvalidRequestError,
    NotFoundError,
)
from diarization.outputs.formats import parse_formats
from diarization.service.callbacks import CallbackPolicy
from diarization.service.locations import Locations, ObjectRef, check_safe_name, parse_s3_uri
from diarization.service.sync import DiarizeSync, SyncRequest
from diarization.service.voiceprints import Voiceprints

MAX_INLINE_AUDIO_BYTES = 4 * 1024 * 1024
"""Base64 inflates by 4/3 and a synchronous Lambda request stops at 6 MB."""
MAX_SYNC_OBJECT_BYTES = MAX_INLINE_AUDIO_BYTES * 8
"""POST /diarize with an `s3_uri`: larger objects are not worth downloading for a 30 s answer."""
ANONYMOUS = "anonymous"
"""The owner of requests without an IAM context (`sam local start-api`, direct invokes): one shared tenant."""


def owner_of(request_context: Mapping[str, Any]) -> str:
    """`{accountId}:{principal id}` of the IAM principal that signed the request.

    The principal id is the caller id up to its first ':': the role id (AROA...) for an assumed role, so every
    session of one role shares its jobs, or the user id (AIDA...) for an IAM user. Ids, not ARNs: a role or user
    deleted and created again under the same name is a different principal and does not inherit the jobs.
    """
    iam = (request_context.get("authorizer") or {}).get("iam") or {}
    account = str(iam.get("accountId") or "")
    principal = str(iam.get("callerId") or iam.get("userId") or "").split(":", 1)[0]
    return f"{account}:{principal}" if account and principal else ANONYMOUS


def error_response(error: DiarizationError) -> Response[str]:
    return Response(
        status_code=error.http_status,
        content_type="application/json",
        body=json.dumps({"error": error.to_dict()}),
    )


def json_response(status: int, body: dict[str, Any]) -> Response[str]:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body, default=str))


class Api:
    def __init__(
        self,
        diarize_sync: DiarizeSync,
        locations: Locations,
        settings: AwsSettings,
        store: S3Store,
        jobs: DynamoJobStore | None,
        queue: Any | None,
        logger: Logger,
        max_upload_bytes: int,
        callbacks: CallbackPolicy | None = None,
        voiceprints: Voiceprints | None = None,
    ) -> None:
        self.diarize_sync = diarize_sync
        self.voiceprints = voiceprints
        self.max_upload_bytes = max_upload_bytes
        self.settings = settings
        self.locations = locations
        self.store = store
        self.jobs = jobs
        self.queue = queue
        self.logger = logger
        self.callbacks = callbacks or CallbackPolicy()
        """Disabled (no hosts) unless the deployment turns webhooks on: `callback_url` is then refused."""
        self.app = APIGatewayHttpResolver()
        self.app.post("/jobs")(self.create_job)
        self.app.get("/jobs/<job_id>")(self.get_job)
        self.app.post("/diarize")(self.diarize)
        self.app.post("/voiceprints")(self.enroll_voiceprint)
        self.app.get("/voiceprints/<name>")(self.get_voiceprint)
        self.app.delete("/voiceprints/<name>")(self.delete_voiceprint)
        self.app.exception_handler(DiarizationError)(error_response)
        self.app.not_found(self._not_found)

    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return self.app.resolve(event, context)

    def _not_found(self, _: Exception) -> Response[str]:
        method, path = self.app.current_event.http_method, self.app.current_event.path
        return error_response(
            NotFoundError(
                f"No route {method} {path}. Routes: POST /jobs, GET /jobs/{{job_id}}, POST /diarize, "
                "POST /voiceprints, GET and DELETE /voiceprints/{name}."
            )
        )

    def _body(self, allowed: set[str]) -> dict[str, Any]:
        raw = self.app.current_event.decoded_body
        try:
            body = json.loads(raw or "")
        except ValueError as error:
            raise InvalidRequestError(f"The request body is not valid JSON: {error}.") from error
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise InvalidRequestError(
                f"Unknown field(s) {unknown}; allowed: {sorted(allowed)}.", unknown_fields=unknown
            )
        return body

    def _owner(self) -> str:
        return owner_of(self.app.current_event.raw_event.get("requestContext") or {})

    def _input(self, uri: Any, owner: str) -> ObjectRef:
        """An `s3_uri` the caller may use: anything under the input prefix (the deployment's shared space) except
        the uploads of other callers' jobs, which answer exactly like a missing object, whether they exist or not."""
        ref = self.locations.parse_input_uri(uri)
        job_id = self.locations.job_id_of_upload(ref)
        if job_id is not None:
            job = self.jobs.get(job_id) if self.jobs else None
            if job is None or job.get("owner") != owner:
                raise InputNotFoundError(f"{ref.uri} does not exist, or is not yours.", uri=ref.uri)
        return ref

    def _require_jobs(self) -> DynamoJobStore:
        if self.jobs is None:
            raise ConfigurationError("JOBS_TABLE is not set: this deployment has no job store.")
        return self.jobs

    def create_job(self) -> Response[str]:
        jobs = self._require_jobs()
        owner = self._owner()
        body = self._body({"s3_uri", "upload", "filename", "formats", "callback_url", "voiceprints", *HINT_NAMES})
        hints = SpeakerHints.from_mapping(body)
        named = body.get("formats")
        formats = self.settings.output_formats if named is None else parse_formats(named)
        callback_url = self.callbacks.check(body["callback_url"]) if "callback_url" in body else None
        # Resolved now (a typo or another model's voiceprint fails the request, not the job) and kept with the job,
        # so the run uses them as they were even if they are re-enrolled or deleted meanwhile.
        voiceprints = self._resolve_voiceprints(owner, body)
        job_id = new_job_id()
        if "s3_uri" in body:
            if "upload" in body or "filename" in body:
                raise InvalidRequestError('Give either "s3_uri", or "upload": true with "filename", not both.')
            ref = self._input(body["s3_uri"], owner)
            if self.queue is None or not self.settings.work_queue_url:
                raise ConfigurationError("WORK_QUEUE_URL is not set: jobs for existing objects cannot be queued.")
            self.store.head(ref)  # 404/403 now, not later in the job
            upload = None
        elif body.get("upload") is True:
            filename = body.get("filename")
            if not isinstance(filename, str) or "/" in filename:
                raise InvalidParameterError('"filename" must be a file name without "/".', parameter="filename")
            check_safe_name(filename, "filename")
            if not self.settings.input_bucket:
                raise ConfigurationError("INPUT_BUCKET is not set: upload URLs cannot be issued.")
            ref_key = self.locations.upload_key(job_id, filename)
            ref = self.locations.check(ObjectRef(self.settings.input_bucket, ref_key))  # before any URL or job
            expiry = self.settings.url_expiry_seconds
            upload = {
                **self.store.presign_post(ref.bucket, ref.key, expiry, self.max_upload_bytes),
                "method": "POST",
                "expires_in": expiry,
                "max_bytes": self.max_upload_bytes,
            }
        else:
            raise InvalidRequestError('Give "s3_uri", or "upload": true with "filename".')

        outputs = self.locations.outputs(ref, formats)
        result = {**outputs.output_uris(), "error": outputs.uri(outputs.error_key)}
        jobs.create(
            job_id,
            owner=owner,
            input=ref.uri,
            hints=hints.to_dict(),
            formats=list(formats),
            result=result,
            upload=upload is not None,
            callback_url=callback_url,
            voiceprints=json.dumps([voiceprint.to_dict() for voiceprint in voiceprints]) if voiceprints else None,
        )
        if upload is None and self.queue is not None:
            self.queue.send_message(
                QueueUrl=self.settings.work_queue_url,
                MessageBody=json.dumps(
                    {"job_id": job_id, "bucket": ref.bucket, "key": ref.key, **hints.as_pipeline_kwargs()}
                ),
            )
        self.logger.info("job created", extra={"job_id": job_id, "input": ref.uri})
        response = {
            "job_id": job_id,
            "status": "queued",
            "input": ref.uri,
            "result": result,
            "status_url": f"/jobs/{job_id}",
        }
        if upload:
            response["upload"] = upload
        if callback_url:
            response["callback_url"] = callback_url
        return json_response(202, response)

    def get_job(self, job_id: str) -> Response[str]:
        job = self._require_jobs().get(job_id)
        if job is None or job.get("owner") != self._owner():  # another caller's job does not exist for this one
            raise NotFoundError(f"No job {job_id!r} (jobs expire {self.settings.job_ttl_days} days after creation).")
        body: dict[str, Any] = {
            "job_id": job_id,
            "status": job["status"],
            "input": job.get("input"),
            "result": job.get("result"),
            "created_at": int(job["created_at"]),
            "updated_at": int(job["updated_at"]),
        }
        outcome = job.get("outcome") or {}
        if job["status"] == "succeeded":
            expiry = self.settings.url_expiry_seconds
            written = {name: parse_s3_uri(uri) for name, uri in outcome["output"].items()}
            body["download"] = {
                **{name: self.store.presign_get(ref.bucket, ref.key, expiry) for name, ref in written.items()},
                "expires_in": expiry,
            }
            body["speaker_count"] = outcome.get("speaker_count")
            body["duration_seconds"] = outcome.get("duration_seconds")
        elif job["status"] == "failed":
            body["error"] = outcome.get("error")
        if job.get("callback_url"):
            body["callback_url"] = job["callback_url"]
            body["webhook"] = job.get("webhook") or {
                "status": "pending" if job["status"] in ("succeeded", "failed") else "waiting"
            }
        return json_response(200, body)

    def diarize(self) -> Response[str]:
        body = self._body({"s3_uri", "audio_base64", "filename", "voiceprints", "speaker_embeddings", *HINT_NAMES})
        hints = SpeakerHints.from_mapping(body)
        embeddings = body.get("speaker_embeddings", False)
        if not isinstance(embeddings, bool):
            raise InvalidParameterError('"speaker_embeddings" must be true or false.', parameter="speaker_embeddings")
        voiceprints = self._resolve_voiceprints(self._owner(), body)
        source, name = self._source(body)
        request = SyncRequest(source, hints, name, voiceprints, embeddings)
        return json_response(200, self.diarize_sync(request).to_dict())

    def _source(self, body: dict[str, Any]) -> tuple[bytes | ObjectRef, str]:
        """Inline audio or an `s3_uri` the caller may read, and its name for the result."""
        if ("s3_uri" in body) == ("audio_base64" in body):
            raise InvalidRequestError('Give exactly one of "s3_uri" or "audio_base64".')
        if "audio_base64" in body:
            name = body.get("filename") or "upload"
            if not isinstance(name, str):
                raise InvalidParameterError('"filename" must be a string.', parameter="filename")
            return self._inline_audio(body["audio_base64"]), name
        ref = self._input(body["s3_uri"], self._owner())
        return ref, ref.uri

    def _resolve_voiceprints(self, owner: str, body: dict[str, Any]) -> tuple[Voiceprint, ...]:
        if "voiceprints" not in body:
            return ()
        voiceprints = self._require_voiceprints().resolve(owner, body["voiceprints"])
        check_compatible(voiceprints, self.diarize_sync.diarizer.embedding_model())
        return voiceprints

    def _require_voiceprints(self) -> Voiceprints:
        if self.voiceprints is None:
            raise ConfigurationError("This deployment has no voiceprint store.")
        return self.voiceprints

    def enroll_voiceprint(self) -> Response[str]:
        """Diarize the sample (limits of POST /diarize) and keep its dominant speaker's centroid under "name"."""
        body = self._body({"name", "s3_uri", "audio_base64", "filename"})
        source, name = self._source(body)
        voiceprint = self._require_voiceprints().enroll(self._owner(), check_name(body.get("name")), source, name)
        return json_response(201, voiceprint.to_dict())

    def get_voiceprint(self, name: str) -> Response[str]:
        return json_response(200, self._require_voiceprints().get(self._owner(), unquote(name)).to_dict())

    def delete_voiceprint(self, name: str) -> Response[str]:
        self._require_voiceprints().delete(self._owner(), unquote(name))
        return json_response(200, {"name": unquote(name), "deleted": True})

    @staticmethod
    def _inline_audio(value: Any) -> bytes:
        if not isinstance(value, str):
            raise InvalidParameterError('"audio_base64" must be a base64 string.', parameter="audio_base64")
        if len(value) > MAX_INLINE_AUDIO_BYTES * 4 // 3 + 4:
            raise AudioTooLargeError(
                f"Inline audio is limited to {MAX_INLINE_AUDIO_BYTES} bytes; upload it with POST /jobs instead."
            )
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            raise InvalidParameterError(
                f'"audio_base64" is not valid base64: {error}.', parameter="audio_base64"
            ) from error
