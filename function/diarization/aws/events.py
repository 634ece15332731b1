"""Turn every trigger's event into work items: which object, which hints, which job.

Shapes handled: S3 notifications (direct, or inside SQS bodies), EventBridge "Object Created"
(direct or via SQS), job messages that POST /jobs puts on the queue, and direct invocations
``{"bucket", "key", hints...}`` (what `sam local invoke` and Step Functions send).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from diarization.aws.locations import ObjectRef
from diarization.errors import InvalidRequestError, UnsupportedEventError
from diarization.hints import HINT_NAMES


@dataclass(frozen=True)
class WorkItem:
    ref: ObjectRef
    hints: Mapping[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    key_may_be_encoded: bool = False
    """EventBridge documents raw keys, but URL-encoded ones have been seen: try both."""


def kind_of(event: Any) -> str:
    """``api``, ``sqs``, ``s3``, ``sns`` (GPU completions), ``eventbridge`` or ``direct``; raises otherwise."""
    if isinstance(event, dict):
        if event.get("version") == "2.0" and "requestContext" in event and "routeKey" in event:
            return "api"
        records = event.get("Records")
        if isinstance(records, list) and records and isinstance(records[0], dict):
            source = records[0].get("eventSource")
            if source == "aws:sqs":
                return "sqs"
            if source == "aws:s3":
                return "s3"
            if records[0].get("EventSource") == "aws:sns":
                return "sns"
        if event.get("source") == "aws.s3" and "detail" in event:
            return "eventbridge"
        if "bucket" in event and "key" in event:
            return "direct"
    keys = sorted(event)[:8] if isinstance(event, dict) else type(event).__name__
    raise UnsupportedEventError(
        f"Unsupported event (keys: {keys}). Send an S3, SQS, EventBridge or API Gateway v2 event, "
        'or {"bucket": ..., "key": ...}.'
    )


def from_s3_notification(notification: Mapping[str, Any]) -> list[WorkItem]:
    """Records of an S3 event notification; ``s3:TestEvent`` (sent when a notification is set up) has none."""
    if notification.get("Event") == "s3:TestEvent":
        return []
    items = []
    for record in notification.get("Records") or []:
        if not str(record.get("eventName", "ObjectCreated")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        bucket, key = (s3.get("bucket") or {}).get("name"), obj.get("key")
        if not bucket or not key:
            raise InvalidRequestError("S3 notification record without bucket name or object key.")
        items.append(
            WorkItem(ObjectRef(bucket, unquote_plus(key), obj.get("versionId") or None, obj.get("eTag") or None))
        )
    return items


def from_eventbridge(event: Mapping[str, Any]) -> list[WorkItem]:
    if event.get("detail-type") != "Object Created":
        return []
    detail = event.get("detail") or {}
    bucket = (detail.get("bucket") or {}).get("name")
    obj = detail.get("object") or {}
    if not bucket or not obj.get("key"):
        raise InvalidRequestError("EventBridge 'Object Created' event without bucket name or object key.")
    ref = ObjectRef(bucket, obj["key"], obj.get("version-id") or None, obj.get("etag") or None)
    return [WorkItem(ref, key_may_be_encoded=True)]


DIRECT_FIELDS = {"bucket", "key", "version_id", "job_id", *HINT_NAMES}


def from_direct(event: Mapping[str, Any]) -> list[WorkItem]:
    """``{"bucket", "key", "version_id"?, hints...}``; also the job messages POST /jobs enqueues."""
    unknown = sorted(set(event) - DIRECT_FIELDS)
    if unknown:
        raise InvalidRequestError(
            f"Unknown field(s) {unknown}; allowed: {sorted(DIRECT_FIELDS)}.", unknown_fields=unknown
        )
    bucket, key = event.get("bucket"), event.get("key")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise InvalidRequestError('"bucket" and "key" must be non-empty strings.')
    version = event.get("version_id")
    job_id = event.get("job_id")
    hints = {name: event[name] for name in HINT_NAMES if name in event}
    return [WorkItem(ObjectRef(bucket, key, version if isinstance(version, str) else None), hints, job_id)]


def from_sqs_body(body: str) -> list[WorkItem]:
    try:
        message = json.loads(body)
    except ValueError as error:
        raise InvalidRequestError(f"SQS message body is not JSON: {error}.") from error
    if not isinstance(message, dict):
        raise InvalidRequestError("SQS message body is not a JSON object.")
    if message.get("Event") == "s3:TestEvent" or "Records" in message:
        return from_s3_notification(message)
    if message.get("source") == "aws.s3":
        return from_eventbridge(message)
    if "bucket" in message and "key" in message:
        return from_direct(message)
    raise UnsupportedEventError(f"Unsupported SQS message (keys: {sorted(message)[:8]}).")
