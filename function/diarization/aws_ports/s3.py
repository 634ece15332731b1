"""S3 reads and writes for the function and the command line, with S3's failures mapped to the core's typed errors.

The function's writes raise S3's own error when they fail (a retry may succeed; the dead-letter path reports the
rest); the command line's :meth:`S3Store.write` maps them to ``OUTPUT_NOT_WRITABLE``, since a person reads it.
"""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

from diarization.errors import (
    AccessDeniedError,
    AudioTooLargeError,
    AwsCredentialsMissingError,
    InputChangedError,
    InputNotFoundError,
    InvalidParameterError,
    OutputNotWritableError,
)
from diarization.service.locations import ObjectRef

NOT_FOUND = {"404", "NoSuchKey", "NoSuchVersion", "NotFound", "NoSuchBucket"}
DENIED = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidObjectState",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}
"""Refusals, the credentials' own included (a wrong key or secret is not fixed by retrying)."""
CHANGED = {"412", "PreconditionFailed"}


class S3Store:
    def __init__(self, client: Any | None = None) -> None:
        # SigV4 for presigned URLs and forms too: botocore would sign them with SigV2 in us-east-1.
        config = Config(retries={"mode": "standard", "max_attempts": 5}, signature_version="s3v4")
        self.client = client or boto3.client("s3", config=config)

    @classmethod
    def with_default_credentials(cls) -> S3Store:
        """For a person's machine (the CLI): boto3's usual credential chain, checked now so that a missing profile
        stops the run before any work. Standard retries; AWS_MAX_ATTEMPTS (boto3's own setting) changes how many."""
        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise AwsCredentialsMissingError(
                "s3:// needs AWS credentials and none were found: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (AWS_ENDPOINT_URL for an S3-compatible endpoint), or run aws sso login."
            )
        return cls(session.client("s3", config=Config(retries={"mode": "standard"}, signature_version="s3v4")))

    def head(self, ref: ObjectRef) -> tuple[int, ObjectRef]:
        """Size in bytes and the exact version to read (the event's version/ETag, else the current one).

        The ref returned pins that version for :meth:`download`: its version id where the bucket has
        versioning, else the ETag HEAD returned (sent as ``If-Match``).
        """
        try:
            response = self.client.head_object(**self._target(ref))
        except ClientError as error:
            raise self._map(error, ref) from error
        modified = response.get("LastModified")
        exact = ObjectRef(
            ref.bucket,
            ref.key,
            ref.version_id or response.get("VersionId"),
            (response.get("ETag") or "").strip('"') or ref.etag,
            modified.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if modified else None,
        )
        return int(response["ContentLength"]), exact

    def download(self, ref: ObjectRef, path: Path, max_bytes: int | None = None) -> None:
        """The object into ``path``; one larger than ``max_bytes`` is refused before its body is read."""
        try:
            response = self.client.get_object(**self._target(ref))
            size = int(response["ContentLength"])
            if max_bytes is not None and size > max_bytes:
                response["Body"].close()
                raise AudioTooLargeError(
                    f"{ref.uri} is {size} bytes; the limit is {max_bytes} bytes (MAX_AUDIO_BYTES).",
                    size_bytes=size,
                    max_bytes=max_bytes,
                )
            with path.open("wb") as handle:
                for chunk in response["Body"].iter_chunks(1024 * 1024):
                    handle.write(chunk)
        except (ClientError, NoCredentialsError, PartialCredentialsError) as error:
            raise self._map(error, ref) from error

    def get_json(self, bucket: str, key: str) -> dict[str, Any]:
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as error:
            raise self._map(error, ObjectRef(bucket, key)) from error
        return _json_object(body, bucket, key)

    def find_json(self, bucket: str, key: str) -> dict[str, Any] | None:
        """`get_json`, or None when there is no such object (any other failure raises boto3's error unchanged)."""
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as error:
            if _code(error) in NOT_FOUND:
                return None
            raise
        return _json_object(body, bucket, key)

    def put_json(self, bucket: str, key: str, body: dict[str, Any]) -> None:
        self.put_text(bucket, key, json.dumps(body, indent=2, ensure_ascii=False) + "\n", "application/json")

    def put_text(self, bucket: str, key: str, text: str, content_type: str = "text/plain") -> None:
        self.client.put_object(
            Bucket=bucket, Key=key, Body=text.encode("utf-8"), ContentType=f"{content_type}; charset=utf-8"
        )

    def put_bytes(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def write(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        """:meth:`put_bytes` for a person: a missing bucket or a refusal is ``OUTPUT_NOT_WRITABLE``, naming both."""
        uri = ObjectRef(bucket, key).uri
        try:
            self.put_bytes(bucket, key, body, content_type)
        except (NoCredentialsError, PartialCredentialsError) as error:
            raise AwsCredentialsMissingError(f"No usable AWS credentials for {uri}: {error}.") from error
        except ClientError as error:
            code = _code(error)
            if code not in NOT_FOUND and code not in DENIED:
                raise
            reason = "the bucket does not exist" if code in NOT_FOUND else f"S3 denied s3:PutObject ({code})"
            raise OutputNotWritableError(f"Cannot write {uri}: {reason}.", uri=uri) from error

    def put_stream(self, bucket: str, key: str, body: BinaryIO, content_type: str) -> None:
        """boto3's managed transfer: 8 MiB parts (a multipart upload above that), read from `body` as it goes."""
        self.client.upload_fileobj(body, bucket, key, ExtraArgs={"ContentType": content_type})

    def get_bytes(self, bucket: str, key: str) -> bytes:
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as error:
            raise self._map(error, ObjectRef(bucket, key)) from error

    def get_range(self, bucket: str, key: str, start: int, stop: int) -> bytes:
        """HTTP ranges are inclusive: ``bytes=start-(stop-1)``. A short answer (the object is shorter) is an error."""
        try:
            response = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}")
            body = bytes(response["Body"].read())
        except ClientError as error:
            raise self._map(error, ObjectRef(bucket, key)) from error
        if len(body) != stop - start:
            raise ValueError(f"s3://{bucket}/{key} bytes [{start}, {stop}) returned {len(body)} bytes")
        return body

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)

    def presign_post(self, bucket: str, key: str, expires: int, max_bytes: int) -> dict[str, Any]:
        """An upload form (URL + fields) for exactly this key, valid `expires` seconds, taking 1 to `max_bytes`
        bytes: S3 itself refuses anything else, so an oversize upload never reaches the function.

        Exactly: botocore signs ``{"key": key}`` unless the key ends in ``${filename}``, which S3 replaces with the
        posted file's name and botocore turns into a ``starts-with`` condition (any key under the prefix). A key
        with a ``$`` is refused here (callers refuse such names first), and the signed policy is checked to hold
        the exact key condition and no ``starts-with`` on the key before the form leaves."""
        if "$" in key:
            raise InvalidParameterError(f"An upload form is never made for a key with '$' ({key!r}).", key=key)
        form = self.client.generate_presigned_post(
            bucket, key, Conditions=[["content-length-range", 1, max_bytes]], ExpiresIn=expires
        )
        fields = dict(form["fields"])
        conditions = json.loads(base64.b64decode(fields["policy"]))["conditions"]
        wildcard = [condition for condition in conditions if isinstance(condition, list) and "$key" in condition]
        if fields.get("key") != key or {"key": key} not in conditions or wildcard:
            raise RuntimeError(f"The signed upload form for {key!r} does not pin its key: {conditions}.")
        return {"url": str(form["url"]), "fields": fields}

    def presign_get(self, bucket: str, key: str, expires: int) -> str:
        return str(
            self.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)
        )

    @staticmethod
    def _target(ref: ObjectRef) -> dict[str, str]:
        target = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version_id:
            target["VersionId"] = ref.version_id
        elif ref.etag:
            target["IfMatch"] = f'"{ref.etag}"'
        return target

    def _map(self, error: Exception, ref: ObjectRef) -> Exception:
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            return AwsCredentialsMissingError(f"No usable AWS credentials for {ref.uri}: {error}.")
        code = _code(error)
        if code in NOT_FOUND:
            return InputNotFoundError(f"{ref.uri} does not exist ({code}; deleted before it was read?).", uri=ref.uri)
        if code in DENIED:
            return AccessDeniedError(
                f"S3 denied reading {ref.uri} ({code}): the credentials in use (the function's role) need "
                "s3:GetObject on it, through the bucket policy too, and the object's KMS key policy must allow them.",
                uri=ref.uri,
            )
        if code in CHANGED:
            current = self._current_etag(error, ref)
            return InputChangedError(
                f"{ref.uri} changed while it was being read: ETag {ref.etag} was expected, S3 now has "
                f"{current or 'an unknown one'}. The newer version has its own event.",
                uri=ref.uri,
                expected_etag=ref.etag,
                current_etag=current,
            )
        return error  # anything else is unexpected: the caller re-raises it for a retry

    def _current_etag(self, error: Exception, ref: ObjectRef) -> str | None:
        """For the message only: the ETag S3 sent with its 412, else a fresh unconditional HEAD's (best effort)."""
        headers = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
        etag = headers.get("etag")
        if not etag:
            try:
                etag = self.client.head_object(Bucket=ref.bucket, Key=ref.key).get("ETag")
            except ClientError:
                return None  # deleted meanwhile, or not ours to read: the expected ETag still explains it
        return str(etag).strip('"') or None


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _json_object(body: bytes, bucket: str, key: str) -> dict[str, Any]:
    value = json.loads(body)
    if not isinstance(value, dict):
        raise ValueError(f"s3://{bucket}/{key} does not hold a JSON object")
    return value
