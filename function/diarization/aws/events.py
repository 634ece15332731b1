"""Turn every trigger's event into object requests: which object, which hints, which job.

Shapes handled: S3 notifications (direct, inside SQS bodies, or wrapped in SNS: S3 -> SNS -> Lambda and
S3 -> SNS -> SQS), EventBridge "Object Created" (direct or via SQS), job messages that POST /jobs puts on
the queue, direct invocations ``{"bucket", "key", hints...}`` (what `sam local invoke` and Step Functions
send), SageMaker async completions (SNS -> Lambda), the fan-out state machine's steps (``{"fanout": {...}}``, see
``diarization.service.fanout``), and what the dead-letter queue holds (SQS messages given up
on, and Lambda's on-failure destination records of failed asynchronous invocations).

SNS records are told apart by their message, one record at a time: an S3 notification (``Records`` from
``aws:s3``, or ``s3:TestEvent``) becomes object requests; a SageMaker async notification (``invocationStatus``,
``requestParameters.inputLocation``) becomes a completion. Inside SQS only S3 notifications are accepted
in an SNS envelope (raw message delivery off; with it on the body *is* the S3 notification): SageMaker
completions go to the function through the topic's own Lambda subscription.

SNS ``SubscriptionConfirmation`` and ``UnsubscribeConfirmation`` messages (an SQS queue in another account
than the topic gets one) are rejected with UNSUPPORTED_EVENT rather than ignored: the function never
confirms a subscription itself (that would let any topic that may write to the queue subscribe it), and a
failed message is retried and then dead-lettered, so the token stays in the DLQ for the owner to confirm
by hand instead of being acknowledged and lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from diarization.core import jsontext
from diarization.core.hints import HINT_NAMES
from diarization.errors import DiarizationError, InvalidRequestError, UnsupportedEventError
from diarization.service.locations import ObjectRef, parse_s3_uri
from diarization.service.model import ObjectRequest

SNS_CONFIRMATIONS = ("SubscriptionConfirmation", "UnsubscribeConfirmation")
SNS_TYPES = ("Notification", *SNS_CONFIRMATIONS)


@dataclass(frozen=True)
class SnsWork:
    """What one SNS record asks for: objects to process (S3 -> SNS), or a GPU job to complete (SageMaker)."""

    items: tuple[ObjectRequest, ...] = ()
    completion: dict[str, Any] | None = None


def kind_of(event: Any) -> str:
    """``api``, ``sqs``, ``s3``, ``sns``, ``eventbridge``, ``schedule``, ``fanout`` or ``direct``; raises otherwise.

    ``sns`` covers S3 notifications and SageMaker completions alike: :func:`from_sns_record` tells them apart.
    """
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
        if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
            return "schedule"  # the template's Schedule: the overdue-work sweep
        if set(event) == {"fanout"} and isinstance(event["fanout"], dict):
            return "fanout"  # a step of the fan-out state machine (statemachine/fanout.asl.json)
        if "bucket" in event and "key" in event:
            return "direct"
    keys = sorted(event)[:8] if isinstance(event, dict) else type(event).__name__
    raise UnsupportedEventError(
        f"Unsupported event (keys: {keys}). Send an S3, SNS, SQS, EventBridge or API Gateway v2 event, "
        'or {"bucket": ..., "key": ...}.'
    )


def from_s3_notification(notification: Mapping[str, Any]) -> list[ObjectRequest]:
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
        ref = ObjectRef(bucket, unquote_plus(key), obj.get("versionId") or None, obj.get("eTag") or None)
        items.append(ObjectRequest(ref, sequencer=obj.get("sequencer") or None))
    return items


def from_eventbridge(event: Mapping[str, Any]) -> list[ObjectRequest]:
    if event.get("detail-type") != "Object Created":
        return []
    detail = event.get("detail") or {}
    bucket = (detail.get("bucket") or {}).get("name")
    obj = detail.get("object") or {}
    if not bucket or not obj.get("key"):
        raise InvalidRequestError("EventBridge 'Object Created' event without bucket name or object key.")
    ref = ObjectRef(bucket, obj["key"], obj.get("version-id") or None, obj.get("etag") or None)
    return [ObjectRequest(ref, key_may_be_encoded=True, sequencer=obj.get("sequencer") or None)]


DIRECT_FIELDS = {"bucket", "key", "version_id", "job_id", *HINT_NAMES}


def from_direct(event: Mapping[str, Any]) -> list[ObjectRequest]:
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
    return [ObjectRequest(ObjectRef(bucket, key, version if isinstance(version, str) else None), hints, job_id)]


def from_sns_record(record: Mapping[str, Any]) -> SnsWork:
    """One record of an SNS -> Lambda event, by its own message (a batch may mix S3 and SageMaker)."""
    sns = record.get("Sns")
    if not isinstance(sns, dict):
        raise InvalidRequestError("SNS record without an 'Sns' object.")
    topic = str(sns.get("TopicArn") or "an unknown topic")
    message = _sns_message(sns.get("Type"), sns.get("Message"), topic)
    if is_sagemaker_notification(message):
        return SnsWork(completion=message)
    if is_s3_notification(message):
        return SnsWork(items=tuple(from_s3_notification(message)))
    raise UnsupportedEventError(
        f"The SNS message from {topic} is neither an S3 event notification nor a SageMaker async inference "
        f"notification (keys: {sorted(message)[:8]}).",
        topic_arn=topic,
    )


def from_sqs_body(body: str) -> list[ObjectRequest]:
    message = _json_object(body, "SQS message body")
    if message.get("Type") in SNS_TYPES and "TopicArn" in message:
        return _from_sns_envelope(message)
    if message.get("Event") == "s3:TestEvent" or "Records" in message:
        return from_s3_notification(message)
    if message.get("source") == "aws.s3":
        return from_eventbridge(message)
    if "bucket" in message and "key" in message:
        return from_direct(message)
    raise UnsupportedEventError(f"Unsupported SQS message (keys: {sorted(message)[:8]}).")


def from_dead_letter_body(body: str) -> list[ObjectRequest]:
    """A message of the dead-letter queue: a work-queue message SQS gave up on (its body unchanged), or the record
    Lambda's on-failure destination writes for an asynchronous invocation that failed after its retries
    (``requestContext`` + ``requestPayload``, the original event: S3 -> SNS -> Lambda, a SageMaker completion,
    S3 or EventBridge straight to the function).

    A failed completion names its input (``requestParameters.inputLocation``): that object is what ends
    unprocessed. Its jobs are not named there; the GPU inference's record ends them (see the overdue sweep).
    """
    message = _json_object(body, "SQS message body")
    payload = message.get("requestPayload")
    context = message.get("requestContext")
    if not (isinstance(context, dict) and "functionArn" in context and isinstance(payload, dict)):
        return from_sqs_body(body)
    kind = kind_of(payload)
    if kind == "sns":
        items: list[ObjectRequest] = []
        for record in payload["Records"]:
            work = from_sns_record(record)
            items.extend(work.items if work.completion is None else [_completion_input(work.completion)])
        return items
    if kind == "s3":
        return from_s3_notification(payload)
    if kind == "eventbridge":
        return from_eventbridge(payload)
    if kind == "direct":
        return from_direct(payload)
    raise UnsupportedEventError(f"A failed {kind} invocation cannot be given up on here (keys: {sorted(payload)[:8]}).")


def _completion_input(completion: Mapping[str, Any]) -> ObjectRequest:
    uri = (completion.get("requestParameters") or {}).get("inputLocation")
    try:
        return ObjectRequest(parse_s3_uri(uri))
    except DiarizationError as error:
        raise InvalidRequestError(
            f"The failed SageMaker notification names no input (inputLocation {uri!r})."
        ) from error


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        message = jsontext.loads(text)
    except ValueError as error:
        raise InvalidRequestError(f"{what} is not JSON: {error}.") from error
    if not isinstance(message, dict):
        raise InvalidRequestError(f"{what} is not a JSON object.")
    return message


def is_s3_notification(message: Mapping[str, Any]) -> bool:
    if message.get("Event") == "s3:TestEvent":
        return True
    records = message.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(record, dict) and record.get("eventSource") == "aws:s3" for record in records)
    )


def is_sagemaker_notification(message: Mapping[str, Any]) -> bool:
    request = message.get("requestParameters")
    return (
        message.get("eventSource") == "aws:sagemaker"
        or "invocationStatus" in message
        or (isinstance(request, dict) and "inputLocation" in request)
    )


def _from_sns_envelope(envelope: Mapping[str, Any]) -> list[ObjectRequest]:
    """S3 -> SNS -> SQS without raw message delivery: the body is SNS's envelope around the S3 notification."""
    topic = str(envelope["TopicArn"])
    message = _sns_message(envelope.get("Type"), envelope.get("Message"), topic)
    if is_s3_notification(message):
        return from_s3_notification(message)
    if is_sagemaker_notification(message):
        raise UnsupportedEventError(
            f"A SageMaker async notification from {topic} arrived through SQS. Subscribe the function to the "
            "topic directly (protocol lambda) so completions reach it as SNS events.",
            topic_arn=topic,
        )
    raise UnsupportedEventError(
        f"The SNS message from {topic} in this SQS body is not an S3 event notification (keys: {sorted(message)[:8]}).",
        topic_arn=topic,
    )


def _sns_message(kind: object, text: object, topic: str) -> dict[str, Any]:
    """The JSON object an SNS notification carries; confirmations are refused (see the module docstring)."""
    if kind in SNS_CONFIRMATIONS:
        raise UnsupportedEventError(
            f"SNS {kind} for {topic}: not work for this function, which never confirms subscriptions itself. "
            "To confirm, open the message's SubscribeURL or pass its Token to `aws sns confirm-subscription`.",
            topic_arn=topic,
        )
    if not isinstance(text, str):
        raise InvalidRequestError(f"The SNS notification from {topic} has no 'Message' string.", topic_arn=topic)
    try:
        message = jsontext.loads(text)
    except ValueError as error:
        raise InvalidRequestError(f"The SNS message from {topic} is not JSON: {error}.", topic_arn=topic) from error
    if not isinstance(message, dict):
        raise InvalidRequestError(f"The SNS message from {topic} is not a JSON object.", topic_arn=topic)
    return message
