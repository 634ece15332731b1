"""Where inputs come from and where their results go: one mapping, used by every trigger.

``s3://B/{INPUT_PREFIX}{name}`` -> ``s3://{OUTPUT_BUCKET or B}/{OUTPUT_PREFIX}{name}.json`` (+ ``.rttm``,
or ``.error.json`` on failure). ``{name}`` keeps sub-folders. Keys under the output prefix are never
inputs, whatever the bucket notification says, so a misconfigured trigger cannot loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from diarization.errors import InvalidParameterError

UPLOADS_FOLDER = "uploads/"
"""Under the input prefix: ``uploads/{job_id}/{filename}`` for files sent through the API's upload URL."""


class Layout(Protocol):
    """Where inputs and outputs live (the Lambda host's `AwsSettings` is one)."""

    @property
    def input_bucket(self) -> str | None: ...

    @property
    def input_prefix(self) -> str: ...

    @property
    def output_bucket(self) -> str | None: ...

    @property
    def output_prefix(self) -> str: ...


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    last_modified: str | None = field(default=None, compare=False)
    """From HEAD, as sortable UTC text (``2026-11-25T20:55:01Z``); orders versions of one key."""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class OutputLocations:
    bucket: str
    json_key: str
    rttm_key: str
    error_key: str

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


class Locations:
    def __init__(self, settings: Layout) -> None:
        self.settings = settings

    def output_bucket(self, input_bucket: str) -> str:
        return self.settings.output_bucket or input_bucket

    def skip_reason(self, ref: ObjectRef) -> str | None:
        """Why this object is not an input (None: it is one)."""
        s = self.settings
        if ref.bucket == self.output_bucket(ref.bucket) and ref.key.startswith(s.output_prefix):
            return f"under the output prefix {s.output_prefix!r}"
        if s.input_bucket and s.output_bucket and ref.bucket == s.output_bucket and ref.bucket != s.input_bucket:
            return "in the output bucket"
        if not ref.key.startswith(s.input_prefix):
            return f"outside the input prefix {s.input_prefix!r}"
        if ref.key.endswith("/") or ref.key == s.input_prefix:
            return "a folder marker, not a file"
        return None

    def name(self, ref: ObjectRef) -> str:
        return ref.key[len(self.settings.input_prefix) :]

    def outputs(self, ref: ObjectRef) -> OutputLocations:
        base = self.settings.output_prefix + self.name(ref)
        return OutputLocations(
            bucket=self.output_bucket(ref.bucket),
            json_key=f"{base}.json",
            rttm_key=f"{base}.rttm",
            error_key=f"{base}.error.json",
        )

    def upload_key(self, job_id: str, filename: str) -> str:
        return f"{self.settings.input_prefix}{UPLOADS_FOLDER}{job_id}/{filename}"

    def job_id_of_upload(self, ref: ObjectRef) -> str | None:
        """The job an uploaded object belongs to, from its key (no lookup needed)."""
        name = self.name(ref)
        if not name.startswith(UPLOADS_FOLDER):
            return None
        job_id, _, rest = name[len(UPLOADS_FOLDER) :].partition("/")
        return job_id if job_id and rest else None

    def parse_input_uri(self, uri: str) -> ObjectRef:
        """An ``s3://`` URI a user sent: must be a file under the configured input bucket and prefix."""
        ref = parse_s3_uri(uri)
        if self.settings.input_bucket is None or ref.bucket != self.settings.input_bucket:
            raise InvalidParameterError(
                f"s3_uri must be in the input bucket {self.settings.input_bucket!r}, not {ref.bucket!r}.",
                parameter="s3_uri",
            )
        reason = self.skip_reason(ref)
        if reason:
            raise InvalidParameterError(
                f"s3_uri {uri!r} is {reason}; put audio under s3://{ref.bucket}/{self.settings.input_prefix}.",
                parameter="s3_uri",
            )
        return ref


def parse_s3_uri(uri: object) -> ObjectRef:
    """``s3://bucket/key`` with a safe key; anything else is an INVALID_PARAMETER."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise InvalidParameterError(f"s3_uri must look like s3://bucket/key, not {uri!r}.", parameter="s3_uri")
    parts = urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if parts.query or parts.fragment or not bucket or not key:
        raise InvalidParameterError(f"s3_uri must look like s3://bucket/key, not {uri!r}.", parameter="s3_uri")
    check_safe_name(key, "s3_uri")
    return ObjectRef(bucket, key)


def check_safe_name(name: str, parameter: str) -> str:
    """Reject names that could escape their folder or confuse S3 consoles and shells."""
    segments = name.split("/")
    if (
        not name
        or len(name) > 900
        or any(segment in ("", ".", "..") for segment in segments)
        or any(ord(char) < 32 or char in "\\\x7f" for char in name)
    ):
        raise InvalidParameterError(
            f"{parameter} {name!r} is not a safe object name (no empty, '.' or '..' segments, "
            "backslashes or control characters; at most 900 characters).",
            parameter=parameter,
        )
    return name
