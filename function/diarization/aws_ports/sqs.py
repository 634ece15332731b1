"""SQS queues: the webhook delivery queue (WEBHOOK_QUEUE_URL)."""

from __future__ import annotations

import json
from typing import Any

import boto3


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
