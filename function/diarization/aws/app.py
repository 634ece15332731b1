"""Wiring of the Lambda function: settings, clients, the loaded pipeline, and event dispatch.

Built once per container at init (``diarization.handler``), so the model load and the clients are
paid for once; tests build the same object from an explicit environment.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from diarization.aws import events
from diarization.aws.api import Api
from diarization.aws.completion import Completion
from diarization.aws.jobs import JobStore
from diarization.aws.notifications import Notifier
from diarization.aws.processing import Processor
from diarization.aws.routing import GpuRouter
from diarization.aws.settings import AwsSettings
from diarization.aws.storage import S3Store
from diarization.config import Settings
from diarization.engine import Diarizer

IDEMPOTENCY_KEY = "[bucket, key, version_id, etag, hints]"
"""One run per object version (or ETag) and set of hints, however often it is delivered."""
IDEMPOTENCY_DAYS = 7


class FunctionApp:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        # API calls and skipped objects have no application metrics; Powertools would warn on each.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        self.logger = Logger(service=env.get("POWERTOOLS_SERVICE_NAME", "diarization"))
        self.tracer = Tracer(service=env.get("POWERTOOLS_SERVICE_NAME", "diarization"))
        self.metrics = Metrics(namespace=env.get("POWERTOOLS_METRICS_NAMESPACE", "Diarization"))
        self.settings = Settings.from_env(env)
        self.aws = AwsSettings.from_env(env)
        self.diarizer = Diarizer.from_settings(self.settings)

        store = S3Store()
        jobs = JobStore(self.aws.jobs_table, self.aws.job_ttl_days) if self.aws.jobs_table else None
        notifier = Notifier(self.aws.event_bus_name) if self.aws.event_bus_name else None
        self.idempotency_config: IdempotencyConfig | None = None
        idempotent: Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]] | None = None
        if self.aws.idempotency_table:
            config = IdempotencyConfig(
                event_key_jmespath=IDEMPOTENCY_KEY,
                raise_on_no_idempotency_key=True,
                expires_after_seconds=IDEMPOTENCY_DAYS * 86400,
            )
            layer = DynamoDBPersistenceLayer(table_name=self.aws.idempotency_table)
            self.idempotency_config = config

            def idempotent(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
                wrapped: Callable[..., dict[str, Any]] = idempotent_function(
                    function, data_keyword_argument="request", persistence_store=layer, config=config
                )
                return wrapped
        else:
            self.logger.warning("IDEMPOTENCY_TABLE is not set: a redelivered event is processed again")

        router = (
            GpuRouter(self.aws.sagemaker_endpoint_name, self.aws.gpu_threshold_seconds)
            if self.aws.sagemaker_endpoint_name
            else None
        )
        self.processor = Processor(
            self.diarizer,
            self.aws,
            store,
            jobs,
            notifier,
            self.logger,
            self.metrics,
            self.tracer,
            idempotent,
            router=router,
        )
        self.completion = Completion(
            self.processor.locations, store, self.processor.publisher, jobs, self.logger, self.metrics
        )
        queue = boto3.client("sqs") if self.aws.work_queue_url else None
        self.api = Api(self.processor, self.aws, store, jobs, queue, self.logger)
        self.batch = BatchProcessor(event_type=EventType.SQS)
        self.lambda_handler = self.logger.inject_lambda_context(clear_state=True)(
            self.tracer.capture_lambda_handler(self.metrics.log_metrics(capture_cold_start_metric=True)(self.handle))
        )
        self.logger.info(
            "ready",
            extra={
                "model": self.diarizer.loaded.manifest.name,
                "trained": self.diarizer.loaded.manifest.trained,
                "device": self.diarizer.loaded.device.device,
                "load_seconds": round(self.diarizer.loaded.load_seconds, 3),
            },
        )

    def handle(self, event: Any, context: Any) -> Any:
        if self.idempotency_config is not None:
            self.idempotency_config.register_lambda_context(context)
        kind = events.kind_of(event)
        self.logger.append_keys(trigger=kind)
        if kind == "api":
            return self.api.resolve(event, context)
        if kind == "sqs":
            response: PartialItemFailureResponse = process_partial_response(
                event=event, record_handler=self._sqs_record, processor=self.batch, context=context
            )
            return response
        if kind == "sns":
            outcomes = [outcome for record in event["Records"] for outcome in self._sns_record(record, context)]
            return {"outcomes": outcomes}
        if kind == "direct":
            (item,) = events.from_direct(event)
            return self.processor.process(item, context)
        items = events.from_s3_notification(event) if kind == "s3" else events.from_eventbridge(event)
        return {"outcomes": [self.processor.process(item, context) for item in items]}

    def _sns_record(self, record: dict[str, Any], context: Any) -> list[dict[str, Any]]:
        """S3 -> SNS -> Lambda or a SageMaker completion: each record by its own message."""
        work = events.from_sns_record(record)
        if work.completion is not None:
            return [self.completion.handle(work.completion, getattr(context, "aws_request_id", None))]
        return [self.processor.process(item, context) for item in work.items]

    def _sqs_record(self, record: SQSRecord) -> list[dict[str, Any]]:
        """Raising marks only this message as failed: SQS redelivers it and, in the end, dead-letters it."""
        self.logger.append_keys(message_id=record.message_id)
        return [self.processor.process(item, self._context) for item in events.from_sqs_body(record.body)]

    @property
    def _context(self) -> Any:
        return self.batch.lambda_context
