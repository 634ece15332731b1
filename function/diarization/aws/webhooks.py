"""Webhook settings and wiring for the Lambda host (see ``diarization.service.webhooks`` for the design).

Settings: ``WEBHOOK_TABLE`` (shown in docs/configuration.md; the design in docs/lambda.md, Webhooks).
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
from diarization.core.environment import Kind, Table, Variable, read
from diarization.errors import ConfigurationError, WebhookDeliveryError
from diarization.service.callbacks import CallbackPolicy
from diarization.service.ports import Log, Telemetry
from diarization.service.webhooks import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_SECONDS,
    DeliverWebhook,
    ResendWebhooks,
    SigningKeys,
    WebhookEvents,
)


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
        values, problems = read(WEBHOOK_TABLE, env)
        settings = cls(**values)  # type: ignore[arg-type]
        missing = missing_variables(settings)
        if missing:
            problems.append(f"WEBHOOK_ALLOWED_HOSTS is set but {', '.join(missing)} is not.")
        if problems:
            raise WEBHOOK_TABLE.error(problems, **({"missing": missing} if missing else {}))
        return settings


def missing_variables(settings: WebhookSettings) -> list[str]:
    """With webhooks on (allowed hosts set): the variables they need that are not set."""
    needed = (
        ("WEBHOOK_SECRET_PARAMETER", settings.secret_parameter),
        ("WEBHOOK_QUEUE_URL", settings.queue_url),
        ("WEBHOOK_QUEUE_ARN", settings.queue_arn),
    )
    return [name for name, value in needed if settings.policy.enabled and not value]


def allowed_networks(text: str) -> tuple[Network, ...]:
    """WEBHOOK_ALLOWED_NETWORKS: comma-separated CIDRs."""
    return tuple(ipaddress.ip_network(cidr.strip()) for cidr in text.split(",") if cidr)


WEBHOOK_TABLE = Table(
    title="webhook settings",
    see="docs/lambda.md#webhooks",
    variables=(
        Variable(
            "WEBHOOK_ALLOWED_HOSTS",
            "policy",
            Kind.PARSED,
            "—",
            "Hosts a `callback_url` may name (see [Webhooks](lambda.md#webhooks)); empty: webhooks are off. Needs "
            "`WEBHOOK_SECRET_PARAMETER`, `WEBHOOK_QUEUE_URL` and `WEBHOOK_QUEUE_ARN`.",
            parse=CallbackPolicy.parse,
        ),
        Variable(
            "WEBHOOK_SECRET_PARAMETER",
            "secret_parameter",
            Kind.TEXT,
            "—",
            "The SSM SecureString parameter holding the master signing secret (each job owner's key is derived from "
            "it).",
        ),
        Variable(
            "WEBHOOK_QUEUE_URL",
            "queue_url",
            Kind.TEXT,
            "—",
            "The webhook delivery queue's URL (its messages are deliveries, not work).",
        ),
        Variable(
            "WEBHOOK_QUEUE_ARN",
            "queue_arn",
            Kind.TEXT,
            "—",
            "The webhook delivery queue's ARN: its records are deliveries, not work.",
        ),
        Variable(
            "WEBHOOK_MAX_ATTEMPTS",
            "max_attempts",
            Kind.WHOLE,
            f"`{DEFAULT_MAX_ATTEMPTS}`",
            "Attempts per webhook (the queue's `maxReceiveCount`): 1 to 100.",
            minimum=1,
            maximum=100,
        ),
        Variable(
            "WEBHOOK_RETRY_SECONDS",
            "retry_seconds",
            Kind.NUMBER,
            f"`{DEFAULT_RETRY_SECONDS:g}`",
            "The first retry's delay: greater than 0, at most 900; later ones double, up to 900 s.",
            above=0,
            maximum=900,
        ),
        Variable(
            "WEBHOOK_CA_BUNDLE",
            "ca_bundle",
            Kind.TEXT,
            "—",
            "Not in the template: a CA bundle to trust instead of the system's, for receivers that are not on the "
            "public internet (the tests' receiver on `127.0.0.1`; a receiver inside a VPC).",
        ),
        Variable(
            "WEBHOOK_ALLOWED_NETWORKS",
            "allowed_networks",
            Kind.PARSED,
            "—",
            "Not in the template: comma-separated CIDRs exempt from the public-address rule (the tests' receiver on "
            "`127.0.0.1`; a receiver inside a VPC).",
            parse=allowed_networks,
        ),
    ),
)
"""Every variable ``WebhookSettings.from_env`` reads, in the order docs/configuration.md lists them."""


class Webhooks:
    """Enqueues each ended job's webhook, queues again what never was (`resend`, from the scheduled sweep), and
    consumes the delivery queue (one SQS record per delivery)."""

    def __init__(self, settings: WebhookSettings, jobs: DynamoJobStore, log: Log, telemetry: Telemetry) -> None:
        if not (settings.queue_url and settings.secret_parameter):
            raise ConfigurationError("Webhooks need WEBHOOK_QUEUE_URL and WEBHOOK_SECRET_PARAMETER.")
        self.settings = settings
        self.queue = SqsWebhookQueue(settings.queue_url)
        master = SsmSecret(settings.secret_parameter)
        self.signing_keys = SigningKeys(master)
        """Each owner's key (POST /jobs gives it to the owner with its callback URL)."""
        self.deliver = DeliverWebhook(
            settings.policy,
            master,
            HttpsSender(settings.ca_bundle, settings.allowed_networks),
            jobs,
            log,
            max_attempts=settings.max_attempts,
            retry_seconds=settings.retry_seconds,
        )
        events = WebhookEvents(jobs, jobs, self.queue, log, telemetry)
        jobs.on_end = events.job_ended
        self.resend = ResendWebhooks(jobs, events, telemetry)
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
