"""SQS queues: the work queue (WORK_QUEUE_URL) and the webhook delivery queue (WEBHOOK_QUEUE_URL)."""

from __future__ import annotations

import json
from typing import Any

import boto3

from diarization.core.hints import SpeakerHints
from diarization.service.locations import ObjectRef


class SqsWebhookQueue:
    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self.queue_url = queue_url
        self.client = client or boto3.client("sqs")

    def enqueue(self, delivery: dict[str, Any]) -> None:
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(delivery, default=str))

    def delay(self, receipt_handle: str, seconds: int) -> None:
        """The message's next attempt after `seconds` (its visibility timeout, from now)."""
        self.client.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )


class SqsJobQueue:
    """The work queue (WORK_QUEUE_URL): a job's message is ``{"job_id", "bucket", "key", hints...}``, which the host
    reads as a direct request (``diarization.aws.events.from_sqs_body``)."""

    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self.queue_url = queue_url
        self.client = client or boto3.client("sqs")

    def send(self, job_id: str, ref: ObjectRef, hints: SpeakerHints) -> None:
        body = {"job_id": job_id, "bucket": ref.bucket, "key": ref.key, **hints.as_pipeline_kwargs()}
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(body))
