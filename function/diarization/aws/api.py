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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from diarization.aws.settings import AwsSettings
from diarization.core import jsontext
from diarization.core.hints import HINT_NAMES, SpeakerHints
from diarization.core.voiceprints import Voiceprint, check_compatible, check_name
from diarization.errors import (
    AudioTooLargeError,
    ConfigurationError,
    DiarizationError,
    InvalidParameterError,
    InvalidRequestError,
    NotFoundError,
)
from diarization.outputs.formats import parse_formats
from diarization.service.callbacks import CallbackPolicy
from diarization.service.deps import Shared
from diarization.service.jobs import NOT_SENT, CreateJob, JobRequest, caller_input
from diarization.service.locations import ObjectRef, parse_s3_uri
from diarization.service.sync import DiarizeSync, SyncRequest
from diarization.service.voiceprints import Voiceprints

MAX_INLINE_AUDIO_BYTES = 4 * 1024 * 1024
"""Base64 inflates by 4/3 and a synchronous Lambda request stops at 6 MB."""
MAX_SYNC_OBJECT_BYTES = MAX_INLINE_AUDIO_BYTES * 8
"""POST /diarize with an `s3_uri`: larger objects are not worth downloading for a 30 s answer."""
ANONYMOUS = "anonymous"
"""The owner of requests without an IAM context (`sam local start-api`, direct invokes): one shared tenant."""
ROLE_ID_PREFIX = "AROA"
"""The unique id of an IAM role; an assumed role's caller id is ``{role id}:{session name}``."""


def owner_of(request_context: Mapping[str, Any]) -> str:
    """`{accountId}:{principal id}` of the IAM principal that signed the request.

    The principal id is the caller id, whole, except an assumed role's (``AROA...:{session}``), which keeps the role id
    alone, so every session of one role shares its jobs. An IAM user is its user id (AIDA...), a federated user
    (GetFederationToken) ``{account id}:{name}``, the root user the account id: each a tenant of its own (cut at
    the first ':', every federated user and the root user were one). Ids, not ARNs: a role or user deleted and
    created again under the same name is a different principal and does not inherit the jobs.
    """
    iam = (request_context.get("authorizer") or {}).get("iam") or {}
    account = str(iam.get("accountId") or "")
    caller = str(iam.get("callerId") or iam.get("userId") or "")
    role, _, session = caller.partition(":")
    principal = role if role.startswith(ROLE_ID_PREFIX) and session else caller
    return f"{account}:{principal}" if account and principal else ANONYMOUS


@dataclass(frozen=True)
class ApiCallbacks:
    """With webhooks on: which `callback_url`s a job may name, and each owner's signing key (hex), which the owner
    gets back as ``webhook_signing_key`` from ``POST /jobs`` with a callback URL."""

    policy: CallbackPolicy
    signing_key: Callable[[str], str]


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
        shared: Shared,
        settings: AwsSettings,
        diarize_sync: DiarizeSync,
        create_job: CreateJob,
        callbacks: ApiCallbacks | None = None,
        voiceprints: Voiceprints | None = None,
    ) -> None:
        self.shared = shared
        self.settings = settings
        self.diarize_sync = diarize_sync
        self.create = create_job
        self.voiceprints = voiceprints
        self.callbacks = callbacks
        """None unless the deployment turns webhooks on: a `callback_url` is then refused (WEBHOOKS_DISABLED)."""
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
            body = jsontext.loads(raw or "")
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

    def create_job(self) -> Response[str]:
        """The body, checked field by field in the order it always was, becomes the use case's request."""
        self.shared.require_jobs()  # first: without a job store, nothing about the body matters
        owner = self._owner()
        body = self._body({"s3_uri", "upload", "filename", "formats", "callback_url", "voiceprints", *HINT_NAMES})
        hints = SpeakerHints.from_mapping(body)
        named = body.get("formats")
        formats = None if named is None else parse_formats(named)
        callback_url, signing_key = self._callback(owner, body)
        voiceprints = self._resolve_voiceprints(owner, body)
        request = JobRequest(
            owner,
            hints,
            s3_uri=body.get("s3_uri", NOT_SENT),
            upload=body.get("upload", NOT_SENT),
            filename=body.get("filename", NOT_SENT),
            formats=formats,
            callback_url=callback_url,
            voiceprints=voiceprints,
        )
        job = self.create(request)
        response: dict[str, Any] = {
            "job_id": job.job_id,
            "status": "queued",
            "input": job.input.uri,
            "result": job.result,
            "status_url": f"/jobs/{job.job_id}",
        }
        if job.upload:
            response["upload"] = job.upload
        if job.callback_url:
            response["callback_url"] = job.callback_url
            response["webhook_signing_key"] = signing_key
        return json_response(202, response)

    def _callback(self, owner: str, body: dict[str, Any]) -> tuple[str | None, str | None]:
        """The checked `callback_url` and the owner's signing key (read before any job exists: a secret that cannot
        be read fails the request, not the job's webhook); (None, None) without one."""
        if "callback_url" not in body:
            return None, None
        if self.callbacks is None:
            return CallbackPolicy().check(body["callback_url"]), None  # disabled: refuses every URL
        return self.callbacks.policy.check(body["callback_url"]), self.callbacks.signing_key(owner)

    def get_job(self, job_id: str) -> Response[str]:
        job = self.shared.require_jobs().get(job_id)
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
                **{name: self.shared.store.presign_get(ref.bucket, ref.key, expiry) for name, ref in written.items()},
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
        ref = caller_input(self.shared.locations, self.shared.jobs, body["s3_uri"], self._owner())
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
