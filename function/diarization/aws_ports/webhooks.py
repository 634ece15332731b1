"""Webhook plumbing on AWS: the delivery queue (SQS) and the signing secret (an SSM SecureString)."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3

from diarization.errors import ConfigurationError

SECRET_CACHE_SECONDS = 300.0
"""Read once per container and again after 5 minutes, so a rotated secret is picked up without a redeploy."""
MIN_SECRET_CHARS = 32


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


class SsmSecret:
    def __init__(self, parameter_name: str, client: Any | None = None) -> None:
        self.parameter_name = parameter_name
        self.client = client or boto3.client("ssm")
        self._value: bytes | None = None
        self._read_at = 0.0

    def __call__(self) -> bytes:
        if self._value is None or time.monotonic() - self._read_at > SECRET_CACHE_SECONDS:
            try:
                response = self.client.get_parameter(Name=self.parameter_name, WithDecryption=True)
            except self.client.exceptions.ParameterNotFound as error:
                raise ConfigurationError(
                    f"WEBHOOK_SECRET_PARAMETER: no SSM parameter {self.parameter_name!r}.",
                    setting="WEBHOOK_SECRET_PARAMETER",
                ) from error
            value = str(response["Parameter"]["Value"])
            if len(value) < MIN_SECRET_CHARS:
                raise ConfigurationError(
                    f"WEBHOOK_SECRET_PARAMETER: the secret in {self.parameter_name!r} is shorter than "
                    f"{MIN_SECRET_CHARS} characters.",
                    setting="WEBHOOK_SECRET_PARAMETER",
                )
            self._value, self._read_at = value.encode(), time.monotonic()
        return self._value
