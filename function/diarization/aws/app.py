"""The Lambda host: wiring (settings, the ports' AWS implementations, the loaded pipeline) and the
adapter that turns each event into use-case calls and their outcomes into Lambda's answer.

Built once per container at init (``diarization.handler``), so the model load and the clients are
paid for once; tests build the same object from an explicit environment. Per-call state (the
invocation's deadline and request id) goes to the use cases as an ``Invocation``, never onto this object.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
from diarization.aws.api import MAX_SYNC_OBJECT_BYTES, Api
from diarization.aws.settings import AwsSettings
from diarization.aws.telemetry import PowertoolsTelemetry
from diarization.aws.webhooks import Webhooks, WebhookSettings
from diarization.aws_ports.dynamodb_jobs import DynamoJobStore
from diarization.aws_ports.dynamodb_ordering import DynamoOrdering
from diarization.aws_ports.eventbridge import EventBridgeNotifier
from diarization.aws_ports.s3 import S3Store
from diarization.aws_ports.s3_voiceprints import S3VoiceprintStore
from diarization.aws_ports.sagemaker import SageMakerRouter
from diarization.aws_ports.sqs import SqsJobQueue
from diarization.aws_ports.stepfunctions import StepFunctionsFanOut
from diarization.core.capacity import MemoryBudget
from diarization.core.config import Settings
from diarization.core.engine import Diarizer
from diarization.errors import ConfigurationError
from diarization.service.abandon import AbandonObject
from diarization.service.completion import CompleteInference
from diarization.service.deps import Shared
from diarization.service.diarize_object import DiarizeObject, Idempotent, SpeedEstimate
from diarization.service.fanout import FanoutSettings, StartFanout
from diarization.service.fanout_steps import FanoutSteps
from diarization.service.jobs import CreateJob
from diarization.service.locations import Locations
from diarization.service.model import Invocation, ObjectRequest
from diarization.service.overdue import EndOverdueJobs
from diarization.service.publishing import Publisher
from diarization.service.sync import DiarizeSync, SyncBudget
from diarization.service.voiceprints import Voiceprints

IDEMPOTENCY_KEY = "[bucket, key, version_id, etag, hints, formats]"
"""One run per object version (or ETag), set of hints and of output formats, however often it is delivered."""
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
        jobs = (
            DynamoJobStore(
                self.aws.jobs_table,
                self.aws.job_ttl_days,
                job_deadline_seconds=self.aws.job_deadline_seconds,
                gpu_deadline_seconds=self.aws.gpu_deadline_seconds,
                fanout_deadline_seconds=self.aws.fanout_deadline_seconds,
            )
            if self.aws.jobs_table
            else None
        )
        notifier = EventBridgeNotifier(self.aws.event_bus_name) if self.aws.event_bus_name else None
        self.idempotency_config: IdempotencyConfig | None = None
        idempotent: Idempotent | None = None
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

        router = SageMakerRouter(self.aws.sagemaker_endpoint_name) if self.aws.sagemaker_endpoint_name else None
        telemetry = PowertoolsTelemetry(self.metrics, self.tracer)
        fanout = (
            FanoutSettings(
                self.aws.fanout_work_bucket,
                self.aws.fanout,
                self.aws.fanout_shard_seconds,
                prefer_gpu=self.aws.long_audio_route == "gpu",
            )
            if self.aws.fanout_state_machine_arn and self.aws.fanout_work_bucket
            else None
        )
        webhook_settings = WebhookSettings.from_env(env)
        self.webhooks = (
            Webhooks(webhook_settings, jobs, self.logger, telemetry)
            if jobs and webhook_settings.policy.enabled
            else None
        )
        locations = Locations(self.aws)
        ordering = DynamoOrdering(self.aws.ordering_table) if self.aws.ordering_table else None
        publisher = Publisher(store, notifier, self.logger, telemetry, ordering)
        shared = Shared(locations, store, publisher, jobs, self.logger, telemetry)
        speed = SpeedEstimate(self.aws.expected_real_time_factor)
        workdir = Path(tempfile.gettempdir())
        budget = SyncBudget(self.aws.sync_budget_seconds, MAX_SYNC_OBJECT_BYTES)
        diarize_sync = DiarizeSync(self.diarizer, store, workdir, budget, speed)
        voiceprints = Voiceprints(diarize_sync, S3VoiceprintStore(store, self.aws.voiceprint_location))
        self.diarize_object = DiarizeObject(
            self.diarizer,
            shared,
            deadline_margin_seconds=self.aws.deadline_margin_seconds,
            speed=speed,
            workdir=workdir,
            router=router,
            gpu_threshold_seconds=self.aws.gpu_threshold_seconds,
            idempotent=idempotent,
            memory=MemoryBudget.of_this_process(env),
            formats=self.aws.output_formats,
            drop_voiceprints=voiceprints.for_drops(self.aws.drop_voiceprint_owner, self.aws.drop_voiceprints),
            fanout=(
                StartFanout(
                    StepFunctionsFanOut(self.aws.fanout_state_machine_arn), fanout, store, self.logger, telemetry
                )
                if fanout and self.aws.fanout_state_machine_arn
                else None
            ),
        )
        self.complete_inference = CompleteInference(
            shared, self.aws.output_formats, voiceprint_threshold=self.settings.voiceprint_threshold
        )
        self.fanout_steps = (
            FanoutSteps(self.diarizer, fanout, shared, self.complete_inference) if fanout and jobs else None
        )
        self.abandon_object = AbandonObject(shared)
        self.end_overdue_jobs = EndOverdueJobs(shared) if jobs else None
        create_job = CreateJob(
            shared,
            SqsJobQueue(self.aws.work_queue_url) if self.aws.work_queue_url else None,
            formats=self.aws.output_formats,
            url_expiry_seconds=self.aws.url_expiry_seconds,
            max_upload_bytes=self.settings.max_audio_bytes,
        )
        self.api = Api(
            shared,
            self.aws,
            diarize_sync,
            create_job,
            callbacks=webhook_settings.policy if self.webhooks else None,
            voiceprints=voiceprints,
        )
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
        if kind == "schedule":
            return {"outcomes": self.sweep(context)}
        if kind == "api":
            return self.api.resolve(event, context)
        if kind == "fanout":
            if self.fanout_steps is None:
                raise ConfigurationError("A fan-out step arrived, but FANOUT_STATE_MACHINE_ARN is not set here.")
            return self.fanout_steps(event["fanout"], invocation_of(context))
        if kind == "sqs" and self.webhooks is not None and self.webhooks.owns(event["Records"]):
            deliveries: PartialItemFailureResponse = process_partial_response(
                event=event, record_handler=self.webhooks.record, processor=self.webhooks.batch, context=context
            )
            return deliveries
        if kind == "sqs":
            dead_letters = self.aws.dead_letter_queue_arn is not None and all(
                record.get("eventSourceARN") == self.aws.dead_letter_queue_arn for record in event["Records"]
            )
            response: PartialItemFailureResponse = process_partial_response(
                event=event,
                record_handler=self._dead_letter_record if dead_letters else self._sqs_record,
                processor=self.batch,
                context=context,
            )
            return response
        if kind == "sns":
            outcomes = [outcome for record in event["Records"] for outcome in self._sns_record(record, context)]
            return {"outcomes": outcomes}
        if kind == "direct":
            (request,) = events.from_direct(event)
            return self.process(request, context)
        requests = events.from_s3_notification(event) if kind == "s3" else events.from_eventbridge(event)
        return {"outcomes": [self.process(request, context) for request in requests]}

    def process(self, request: ObjectRequest, context: Any) -> dict[str, Any]:
        """One object: the use case's outcome as the JSON Lambda answers with."""
        self.logger.append_keys(s3_bucket=request.ref.bucket, s3_key=request.ref.key)
        outcome: dict[str, Any] = self.diarize_object(request, invocation_of(context)).to_dict()
        return outcome

    def sweep(self, context: Any) -> list[dict[str, Any]]:
        """The scheduled sweep of overdue work. The clock is this process's, never the event's: whoever may invoke
        the function must not be able to end jobs early by sending a time in the future."""
        if self.end_overdue_jobs is None:
            self.logger.warning("scheduled sweep without JOBS_TABLE: there are no jobs to end")
            return []
        return [outcome.to_dict() for outcome in self.end_overdue_jobs(time.time(), invocation_of(context))]

    def _sns_record(self, record: dict[str, Any], context: Any) -> list[dict[str, Any]]:
        """S3 -> SNS -> Lambda or a SageMaker completion: each record by its own message."""
        work = events.from_sns_record(record)
        if work.completion is not None:
            self.logger.append_keys(inference_id=work.completion.get("inferenceId"))
            return [self.complete_inference(work.completion, invocation_of(context)).to_dict()]
        return [self.process(request, context) for request in work.items]

    def _dead_letter_record(self, record: SQSRecord) -> list[dict[str, Any]]:
        """A message the function gave up on (an SQS message, or an asynchronous invocation's on-failure record): its
        objects get error objects and their jobs fail. A message that is not work (malformed, an SNS confirmation)
        fails here too; after 3 tries the queue's own redrive policy parks it for a person."""
        self.logger.append_keys(message_id=record.message_id)
        deliveries = int(record.attributes.approximate_receive_count)
        invocation = invocation_of(self.batch.lambda_context)
        return [
            self.abandon_object(request, invocation, deliveries).to_dict()
            for request in events.from_dead_letter_body(record.body)
        ]

    def _sqs_record(self, record: SQSRecord) -> list[dict[str, Any]]:
        """Raising marks only this message as failed: SQS redelivers it and, in the end, dead-letters it."""
        self.logger.append_keys(message_id=record.message_id)
        context = self.batch.lambda_context
        return [self.process(request, context) for request in events.from_sqs_body(record.body)]


def invocation_of(context: Any) -> Invocation:
    """Lambda's context object -> the service's per-call value (deadline, request id)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return Invocation.from_remaining(
        remaining() / 1000 if callable(remaining) else None, getattr(context, "aws_request_id", None)
    )
