"""Webhook settings and wiring for the Lambda host (see ``diarization.service.webhooks`` for the design).

Settings (see README, Webhooks): ``WEBHOOK_ALLOWED_HOSTS`` (empty: webhooks off), ``WEBHOOK_SECRET_PARAMETER`` (an
SSM SecureString), ``WEBHOOK_QUEUE_URL`` / ``WEBHOOK_QUEUE_ARN`` (the delivery queue), ``WEBHOOK_MAX_ATTEMPTS`` (the
queue's maxReceiveCount), ``WEBHOOK_RETRY_SECONDS`` (first retry delay). Not in the template, for receivers that are
not on the public internet (tests, a VPC): ``WEBHOOK_CA_BUNDLE``, ``WEBHOOK_ALLOWED_NETWORKS`` (CIDRs).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from diarization.aws_ports.dynamodb_jobs import DynamoJobStore
from diarization.aws_ports.sqs import SqsWebhookQueue
from diarization.aws_ports.ssm import SsmSecret
from diarization.aws_ports.webhook_http import HttpsSender, Network
from diarization.errors import ConfigurationError, WebhookDeliveryError
from diarization.service.callbacks import CallbackPolicy
from diarization.service.ports import Log, Telemetry
from diarization.service.webhooks import DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_SECONDS, DeliverWebhook, WebhookEvents


@dataclass(frozen=True)
class WebhookSettings:
    policy: CallbackPolicy = field(default_factory=CallbackPolicy)
    secret_parameter: str | None = None
    queue_url: str | None = None
    queue_arn: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_seconds: float = DEFAULT_RETRY_SECONDS
    ca_bundle: str | None = None
    allowed_networks: tuple[Network, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSettings:
        def text(name: str) -> str | None:
            return env.get(name, "").strip() or None

        policy = CallbackPolicy.parse(text("WEBHOOK_ALLOWED_HOSTS"))
        try:
            max_attempts = int(text("WEBHOOK_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
            retry_seconds = float(text("WEBHOOK_RETRY_SECONDS") or DEFAULT_RETRY_SECONDS)
            networks = tuple(
                ipaddress.ip_network(cidr.strip())
                for cidr in (text("WEBHOOK_ALLOWED_NETWORKS") or "").split(",")
                if cidr
            )
        except ValueError as error:
            raise ConfigurationError(f"Invalid webhook setting: {error}. See README, Webhooks.") from error
        settings = cls(
            policy,
            text("WEBHOOK_SECRET_PARAMETER"),
            text("WEBHOOK_QUEUE_URL"),
            text("WEBHOOK_QUEUE_ARN"),
            max_attempts,
            retry_seconds,
            text("WEBHOOK_CA_BUNDLE"),
            networks,
        )
        missing = [
            name
            for name, value in (
                ("WEBHOOK_SECRET_PARAMETER", settings.secret_parameter),
                ("WEBHOOK_QUEUE_URL", settings.queue_url),
                ("WEBHOOK_QUEUE_ARN", settings.queue_arn),
            )
            if not value
        ]
        if policy.enabled and missing:
            raise ConfigurationError(
                f"WEBHOOK_ALLOWED_HOSTS is set but {', '.join(missing)} is not. See README, Webhooks.", missing=missing
            )
        if not 1 <= max_attempts <= 100 or not 0 < retry_seconds <= 900:
            raise ConfigurationError("WEBHOOK_MAX_ATTEMPTS must be 1-100 and WEBHOOK_RETRY_SECONDS 0-900.")
        return settings


class Webhooks:
    """Enqueues each ended job's webhook, and consumes the delivery queue (one SQS record per delivery)."""

    def __init__(self, settings: WebhookSettings, jobs: DynamoJobStore, log: Log, telemetry: Telemetry) -> None:
        if not (settings.queue_url and settings.secret_parameter):
            raise ConfigurationError("Webhooks need WEBHOOK_QUEUE_URL and WEBHOOK_SECRET_PARAMETER.")
        self.settings = settings
        self.queue = SqsWebhookQueue(settings.queue_url)
        self.deliver = DeliverWebhook(
            settings.policy,
            SsmSecret(settings.secret_parameter),
            HttpsSender(settings.ca_bundle, settings.allowed_networks),
            jobs,
            log,
            max_attempts=settings.max_attempts,
            retry_seconds=settings.retry_seconds,
        )
        jobs.on_end = WebhookEvents(jobs, self.queue, log, telemetry).job_ended
        # A receiver that is down fails every record of a batch: an expected outcome (each message is retried on its
        # own schedule), not a function error that would count against the error alarm.
        self.batch = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def owns(self, records: list[dict[str, Any]]) -> bool:
        return all(record.get("eventSourceARN") == self.settings.queue_arn for record in records)

    def record(self, record: SQSRecord) -> dict[str, Any]:
        """A failed attempt raises, so the batch reports the message as failed and SQS keeps it: visible again after
        its new delay, or moved to the webhook dead-letter queue after the last attempt."""
        attempt = int(record.attributes.approximate_receive_count)
        delivery = self.deliver(json.loads(record.body), attempt)
        if delivery.status == "retry" and delivery.retry_in is not None:
            self.queue.delay(record.receipt_handle, delivery.retry_in)
        elif delivery.status == "dead":
            self.queue.delay(record.receipt_handle, 0)  # visible now: the next receive dead-letters it
        if delivery.status != "delivered":
            raise WebhookDeliveryError(delivery.error or delivery.status, status=delivery.status)
        return {"status": delivery.status, "attempt": delivery.attempt}
