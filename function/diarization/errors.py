"""Typed errors with stable codes.

Every failure a user can cause or observe is a :class:`DiarizationError` with a
``code`` that never changes once released. Adapters (CLI, Lambda, SageMaker)
map the code to an exit status, an HTTP status or an ``.error.json`` object
without parsing messages.
"""

from __future__ import annotations

from typing import Any


class DiarizationError(Exception):
    """Base class: a stable ``code``, a human ``message`` and structured ``details``."""

    code = "INTERNAL_ERROR"
    http_status = 500
    permanent = True
    """The same input fails the same way every time, so the outcome may be remembered (idempotency)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConfigurationError(DiarizationError):
    """An environment variable or option is invalid; the message names it and the fix."""

    code = "CONFIGURATION_ERROR"
    http_status = 500


class InvalidParameterError(DiarizationError):
    """A request parameter (e.g. a speaker hint) is invalid."""

    code = "INVALID_PARAMETER"
    http_status = 400


class InvalidRequestError(DiarizationError):
    """A request body or event is malformed: not JSON, not an object, unknown or missing fields."""

    code = "INVALID_REQUEST"
    http_status = 400


class UnknownFormatError(DiarizationError):
    """An output format name that does not exist (a request's ``formats``, OUTPUT_FORMATS, a CLI option).
    ``details``: ``unknown``, ``allowed``."""

    code = "UNKNOWN_FORMAT"
    http_status = 400


class InputNameReservedError(DiarizationError):
    """The input's name is reserved for outputs: it ends in ``.error`` (its result ``{name}.json`` would be the
    error object of the input without that suffix) or lies under ``_key-too-long/`` (the fallback folder for error
    objects). Permanent: rename the input. The error object goes to ``{name}.error.json`` (or the fallback), which
    no other input's outputs use (see ``diarization.service.locations``)."""

    code = "INPUT_NAME_RESERVED"
    http_status = 400


class KeyTooLongError(DiarizationError):
    """The input key, or its longest output key (``{OUTPUT_PREFIX}{name}.error.json``), is longer than S3's 1,024
    bytes of UTF-8. ``details``: ``key_bytes`` (of the longest key), ``max_bytes``. Permanent: the keys depend only
    on the name and the deployment's prefixes; an S3-triggered input gets its error object in the fallback folder."""

    code = "KEY_TOO_LONG"
    http_status = 400


class InputNotFoundError(DiarizationError):
    """The audio file does not exist."""

    code = "INPUT_NOT_FOUND"
    http_status = 404


class AccessDeniedError(DiarizationError):
    """The function is not allowed to read the input (IAM, bucket policy or KMS)."""

    code = "ACCESS_DENIED"
    http_status = 403


class AwsCredentialsMissingError(DiarizationError):
    """CLI: an ``s3://`` input or output was named but boto3 found no AWS credentials (environment, shared files,
    SSO, instance role)."""

    code = "AWS_CREDENTIALS_MISSING"
    http_status = 401


class OutputNotWritableError(DiarizationError):
    """CLI: the result cannot be written where ``--output``/``--output-dir`` says (permissions, a file or folder in
    the way, a read-only file system; for ``s3://``: no such bucket or access denied)."""

    code = "OUTPUT_NOT_WRITABLE"
    http_status = 403


class InputChangedError(DiarizationError):
    """The object changed between HeadObject and the download (the version was pinned by its ETag);
    the newer version has its own event. ``details``: ``expected_etag``, ``current_etag`` (None if unknown)."""

    code = "INPUT_CHANGED"
    http_status = 409


class UploadAlreadyUsedError(DiarizationError):
    """A new file arrived through a job's upload form after the job had ended (a form works until it expires, and S3
    has no create-only condition for POST uploads). It is not diarized: a job runs once. Its error object replaces
    the outputs of the job's file, which is no longer the object. ``details``: ``job_id``, ``job_status``."""

    code = "UPLOAD_ALREADY_USED"
    http_status = 409


class JobAlreadyStartedError(DiarizationError):
    """A file arrived in a job's upload folder after the job had started on another one — another name, or another
    version of the same name. A job runs once, on the first upload it started with: this file is not diarized, and
    its error object describes it (the job keeps its run). ``details``: ``job_id``, ``run_input`` and
    ``run_version`` (what the job runs on)."""

    code = "JOB_ALREADY_STARTED"
    http_status = 409


class NotFoundError(DiarizationError):
    """An API route or job that does not exist."""

    code = "NOT_FOUND"
    http_status = 404


class TooLongForSyncError(DiarizationError):
    """POST /diarize: the audio would not be done within the API's 30 s; use POST /jobs."""

    code = "TOO_LONG_FOR_SYNC"
    http_status = 422


class UnsupportedEventError(DiarizationError):
    """The Lambda function received an event shape it does not handle."""

    code = "UNSUPPORTED_EVENT"
    http_status = 400


class AudioTooLongForLambdaError(DiarizationError):
    """The estimated processing time does not fit in the invocation's remaining time."""

    code = "AUDIO_TOO_LONG_FOR_LAMBDA"
    http_status = 413
    permanent = False


class AudioTooLongForMemoryError(DiarizationError):
    """The estimated peak memory (the loaded model plus pyannote's clustering, which grows with the square of
    the audio length) exceeds the memory this process may use; checked before diarizing, so a long file gets
    this error instead of an out-of-memory kill that leaves no error object (see docs/CAPACITY.md).
    ``details``: ``audio_seconds``, ``estimated_bytes``, ``limit_bytes``, ``baseline_bytes``,
    ``max_audio_seconds`` (the longest audio this limit admits). 413 like the other "too long" codes: the
    input is valid but larger than this deployment takes. Permanent: the estimate depends only on the
    duration and the deployment's memory, so a redelivery fails the same way."""

    code = "AUDIO_TOO_LONG_FOR_MEMORY"
    http_status = 413


class GpuInferenceFailedError(DiarizationError):
    """The GPU endpoint failed without one of our error bodies (container crash, timeout, capacity)."""

    code = "GPU_INFERENCE_FAILED"
    http_status = 502


class FanoutFailedError(DiarizationError):
    """A fan-out step failed for good (after its retries) without one of our typed errors: a crash, a timeout, an
    unexpected S3 or Lambda failure. ``details``: ``execution``, ``step_error`` (Step Functions' error name)."""

    code = "FANOUT_FAILED"
    http_status = 502


class JobDeadlineExceededError(DiarizationError):
    """Work that was started (in Lambda) or routed (to the GPU endpoint) was not done by its deadline: every delivery
    ended without an answer, or the endpoint (or fan-out execution) never reported back. The overdue-job sweep writes
    it. ``details``: ``deadline`` (Unix seconds), ``where`` (``lambda``, ``gpu`` or ``fanout``), ``inference_id`` for
    routed work."""

    code = "JOB_DEADLINE_EXCEEDED"
    http_status = 504


class EmptyAudioError(DiarizationError):
    """The input has no bytes, or decodes to zero samples."""

    code = "EMPTY_AUDIO"
    http_status = 422


class NoAudioStreamError(DiarizationError):
    """The file is a valid container (or not a media file at all) without any audio stream."""

    code = "NO_AUDIO_STREAM"
    http_status = 422


class InvalidAudioError(DiarizationError):
    """The bytes cannot be decoded as audio, are truncated, or hold non-finite samples."""

    code = "INVALID_AUDIO"
    http_status = 422


class AudioTooLargeError(DiarizationError):
    """The input is larger than ``MAX_AUDIO_BYTES``; rejected before decoding."""

    code = "AUDIO_TOO_LARGE"
    http_status = 413


class AudioTooLongError(DiarizationError):
    """The audio is longer than ``MAX_AUDIO_SECONDS``; rejected before diarization."""

    code = "AUDIO_TOO_LONG"
    http_status = 413


class ModelNotFoundError(DiarizationError):
    """``MODEL_DIR`` does not exist or lacks required files."""

    code = "MODEL_NOT_FOUND"
    http_status = 503


class ModelInvalidError(DiarizationError):
    """The model directory exists but cannot be loaded (corrupt or incompatible files)."""

    code = "MODEL_INVALID"
    http_status = 503


class DeviceUnavailableError(DiarizationError):
    """``DEVICE=cuda`` was requested on a machine without a usable GPU."""

    code = "DEVICE_UNAVAILABLE"
    http_status = 503


class PrecisionUnsupportedError(DiarizationError):
    """``EMBEDDING_PRECISION`` names arithmetic the selected device cannot run fast (fp16 on a CPU)."""

    code = "PRECISION_UNSUPPORTED"
    http_status = 500


class HubTokenMissingError(DiarizationError):
    """``bake`` needs a Hugging Face token and none was given."""

    code = "HF_TOKEN_MISSING"
    http_status = 401


class HubAccessDeniedError(DiarizationError):
    """The hub rejected the token, or the model's conditions were not accepted."""

    code = "HF_ACCESS_DENIED"
    http_status = 403


class HubUnavailableError(DiarizationError):
    """The hub could not be reached, or the model or revision does not exist."""

    code = "HF_HUB_UNAVAILABLE"
    http_status = 502


class WebhooksDisabledError(DiarizationError):
    """A request names a ``callback_url`` but this deployment allows no webhook hosts (``WEBHOOK_ALLOWED_HOSTS``
    is empty, the template's ``WebhookAllowedHosts``). Poll ``GET /jobs/{id}`` instead, or ask the operator."""

    code = "WEBHOOKS_DISABLED"
    http_status = 400


class CallbackUrlInvalidError(DiarizationError):
    """The ``callback_url`` is not an ``https://`` URL this service may call: too long, user info, an IP address
    instead of a host name, a fragment, control characters, a backslash, characters outside ASCII or a host that is
    not a DNS name. ``details``: ``reason``."""

    code = "CALLBACK_URL_INVALID"
    http_status = 400


class CallbackHostNotAllowedError(DiarizationError):
    """The ``callback_url``'s host (and port: 443 unless the allow-list names another) is not on the deployment's
    allow-list. ``details``: ``host``, ``port``."""

    code = "CALLBACK_HOST_NOT_ALLOWED"
    http_status = 400


class WebhookDeliveryError(DiarizationError):
    """A webhook POST got no answer (refused, timed out, TLS failed) or the receiver's address is not public. Not
    seen in API answers: it is recorded on the job's ``webhook.last_error`` while deliveries are retried."""

    code = "WEBHOOK_DELIVERY_FAILED"
    http_status = 502
    permanent = False


class InvalidVoiceprintError(DiarizationError):
    """A voiceprint (a stored or sent JSON document, or its name) is malformed."""

    code = "INVALID_VOICEPRINT"
    http_status = 400


class VoiceprintNotFoundError(DiarizationError):
    """A request names a voiceprint the caller has not enrolled (callers never see each other's)."""

    code = "VOICEPRINT_NOT_FOUND"
    http_status = 404


class VoiceprintModelMismatchError(DiarizationError):
    """A voiceprint was made by another embedding model (name, revision or dimension): its embedding lives in
    another space, so it is refused rather than compared. Enroll it again with the deployment's model."""

    code = "VOICEPRINT_MODEL_MISMATCH"
    http_status = 409


class VoiceprintsOnSharedInputError(DiarizationError):
    """A job names voiceprints for an object of the shared input space: its results are shared (any caller's job on
    that object gets the same keys), so a caller's names would reach other callers. Named results are written only
    for the caller's own uploads. ``details``: ``uri``."""

    code = "VOICEPRINTS_ON_SHARED_INPUT"
    http_status = 400


class EnrollmentNoSpeechError(DiarizationError):
    """The enrollment sample has no speaker with a usable embedding (silence, noise, too short)."""

    code = "ENROLLMENT_NO_SPEECH"
    http_status = 400


ERROR_CODES: dict[str, type[DiarizationError]] = {
    cls.code: cls
    for cls in (
        DiarizationError,
        ConfigurationError,
        InvalidParameterError,
        InvalidRequestError,
        UnknownFormatError,
        InputNameReservedError,
        KeyTooLongError,
        InputNotFoundError,
        AccessDeniedError,
        AwsCredentialsMissingError,
        OutputNotWritableError,
        InputChangedError,
        UploadAlreadyUsedError,
        JobAlreadyStartedError,
        UnsupportedEventError,
        NotFoundError,
        TooLongForSyncError,
        AudioTooLongForLambdaError,
        AudioTooLongForMemoryError,
        GpuInferenceFailedError,
        FanoutFailedError,
        JobDeadlineExceededError,
        EmptyAudioError,
        NoAudioStreamError,
        InvalidAudioError,
        AudioTooLargeError,
        AudioTooLongError,
        ModelNotFoundError,
        ModelInvalidError,
        DeviceUnavailableError,
        PrecisionUnsupportedError,
        HubTokenMissingError,
        HubAccessDeniedError,
        HubUnavailableError,
        WebhooksDisabledError,
        CallbackUrlInvalidError,
        CallbackHostNotAllowedError,
        WebhookDeliveryError,
        InvalidVoiceprintError,
        VoiceprintNotFoundError,
        VoiceprintModelMismatchError,
        VoiceprintsOnSharedInputError,
        EnrollmentNoSpeechError,
    )
}
"""Every stable code, for documentation and for adapters that map codes to statuses."""
