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
from dataclasses import dataclass
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
from diarization.aws.api import MAX_SYNC_OBJECT_BYTES, Api, ApiCallbacks
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

IDEMPOTENCY_KEY = "identity"
"""One run per run identity (``PinnedRun.identity``: the object version or ETag, hints, output formats, voiceprints,
job and owner), however often it is delivered."""
IDEMPOTENCY_DAYS = 7


class FunctionApp:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        """The composition root: settings, then the ports' AWS implementations, then the use cases."""
        env = os.environ if env is None else env
        self.logger, self.tracer, self.metrics = _powertools(env)
        self.settings = Settings.from_env(env)
        self.aws = AwsSettings.from_env(env)
        self.diarizer = Diarizer.from_settings(self.settings)
        telemetry = PowertoolsTelemetry(self.metrics, self.tracer)
        store, jobs, fanout = S3Store(), _job_store(self.aws), _fanout_settings(self.aws)
        self.idempotency_config, idempotent = _idempotency(self.aws, self.logger)
        self.webhooks = _webhooks(env, jobs, self.logger, telemetry)
        shared = _shared(self.aws, store, jobs, self.logger, telemetry)
        speed, workdir = SpeedEstimate(self.aws.expected_real_time_factor), Path(tempfile.gettempdir())
        diarize_sync = DiarizeSync(self.diarizer, store, workdir, _sync_budget(self.aws), speed)
        voiceprints = Voiceprints(diarize_sync, S3VoiceprintStore(store, self.aws.voiceprint_location))
        objects = _ObjectSetup(self.aws, shared, speed, workdir, idempotent, voiceprints, fanout)
        self.diarize_object = _diarize_object(env, self.diarizer, objects)
        self.complete_inference, self.fanout_steps = _completion(self.settings, self.aws, self.diarizer, shared, fanout)
        self.abandon_object = AbandonObject(shared)
        self.end_overdue_jobs = EndOverdueJobs(shared) if jobs else None
        self.api = _api(self.aws, self.settings, shared, diarize_sync, voiceprints, self.webhooks)
        self.batch = BatchProcessor(event_type=EventType.SQS)
        self.lambda_handler = self._with_powertools(self.handle)
        self._log_ready()

    def _with_powertools(self, handle: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """The handler Lambda calls: `handle` with the invocation's context in the logs, a trace, and the metrics."""
        with_metrics = self.metrics.log_metrics(capture_cold_start_metric=True)(handle)
        return self.logger.inject_lambda_context(clear_state=True)(self.tracer.capture_lambda_handler(with_metrics))

    def _log_ready(self) -> None:
        loaded = self.diarizer.loaded
        self.logger.info(
            "ready",
            extra={
                "model": loaded.manifest.name,
                "trained": loaded.manifest.trained,
                "device": loaded.device.device,
                "load_seconds": round(loaded.load_seconds, 3),
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

    def sweep(self, context: Any, now: float | None = None) -> list[dict[str, Any]]:
        """The scheduled sweep: overdue work, then webhooks recorded but never queued. The clock is this process's,
        never the event's: whoever may invoke the function must not be able to end jobs early by sending a time in
        the future (`now` is for tests)."""
        if self.end_overdue_jobs is None:
            self.logger.warning("scheduled sweep without JOBS_TABLE: there are no jobs to end")
            return []
        now = time.time() if now is None else now
        outcomes = [outcome.to_dict() for outcome in self.end_overdue_jobs(now, invocation_of(context))]
        if self.webhooks is not None:
            resent = self.webhooks.resend(now)
            if resent:
                self.logger.warning("queued webhooks that were never queued", extra={"job_ids": resent})
        return outcomes

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


def _powertools(env: Mapping[str, str]) -> tuple[Logger, Tracer, Metrics]:
    """Logs, traces and metrics (telemetry: ``PowertoolsTelemetry`` over the last two)."""
    # API calls and skipped objects have no application metrics; Powertools would warn on each.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    service = env.get("POWERTOOLS_SERVICE_NAME", "diarization")
    metrics = Metrics(namespace=env.get("POWERTOOLS_METRICS_NAMESPACE", "Diarization"))
    return Logger(service=service), Tracer(service=service), metrics


def _job_store(aws: AwsSettings) -> DynamoJobStore | None:
    if not aws.jobs_table:
        return None
    return DynamoJobStore(
        aws.jobs_table,
        aws.job_ttl_days,
        job_deadline_seconds=aws.job_deadline_seconds,
        gpu_deadline_seconds=aws.gpu_deadline_seconds,
        fanout_deadline_seconds=aws.fanout_deadline_seconds,
    )


def _idempotency(aws: AwsSettings, logger: Logger) -> tuple[IdempotencyConfig | None, Idempotent | None]:
    """Powertools idempotency in the idempotency table: its config (given each invocation's context) and the wrapper
    that makes one run per run identity (IDEMPOTENCY_KEY); neither without IDEMPOTENCY_TABLE."""
    if not aws.idempotency_table:
        logger.warning("IDEMPOTENCY_TABLE is not set: a redelivered event is processed again")
        return None, None
    config = IdempotencyConfig(
        event_key_jmespath=IDEMPOTENCY_KEY,
        raise_on_no_idempotency_key=True,
        expires_after_seconds=IDEMPOTENCY_DAYS * 86400,
    )
    layer = DynamoDBPersistenceLayer(table_name=aws.idempotency_table)

    def idempotent(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        wrapped: Callable[..., dict[str, Any]] = idempotent_function(
            function, data_keyword_argument="request", persistence_store=layer, config=config
        )
        return wrapped

    return config, idempotent


def _fanout_settings(aws: AwsSettings) -> FanoutSettings | None:
    """The fan-out, where its state machine and work bucket are deployed."""
    if not (aws.fanout_state_machine_arn and aws.fanout_work_bucket):
        return None
    return FanoutSettings(
        aws.fanout_work_bucket, aws.fanout, aws.fanout_shard_seconds, prefer_gpu=aws.long_audio_route == "gpu"
    )


def _webhooks(
    env: Mapping[str, str], jobs: DynamoJobStore | None, logger: Logger, telemetry: PowertoolsTelemetry
) -> Webhooks | None:
    """The webhook plumbing (with the policy `callback_url`s are checked against), unless webhooks are off (or
    there are no jobs to call back about). The settings are checked either way."""
    settings = WebhookSettings.from_env(env)
    if not (jobs and settings.policy.enabled):
        return None
    return Webhooks(settings, jobs, logger, telemetry)


def _sync_budget(aws: AwsSettings) -> SyncBudget:
    """POST /diarize answers only what fits API Gateway's 30 s (SYNC_BUDGET_SECONDS), from objects of a bounded size."""
    return SyncBudget(aws.sync_budget_seconds, MAX_SYNC_OBJECT_BYTES)


def _shared(
    aws: AwsSettings, store: S3Store, jobs: DynamoJobStore | None, logger: Logger, telemetry: PowertoolsTelemetry
) -> Shared:
    notifier = EventBridgeNotifier(aws.event_bus_name) if aws.event_bus_name else None
    ordering = DynamoOrdering(aws.ordering_table) if aws.ordering_table else None
    publisher = Publisher(store, notifier, logger, telemetry, ordering)
    return Shared(Locations(aws), store, publisher, jobs, logger, telemetry)


@dataclass(frozen=True)
class _ObjectSetup:
    """What the object use case is built from, beside the diarizer."""

    aws: AwsSettings
    shared: Shared
    speed: SpeedEstimate
    workdir: Path
    idempotent: Idempotent | None
    voiceprints: Voiceprints
    fanout: FanoutSettings | None


def _diarize_object(env: Mapping[str, str], diarizer: Diarizer, setup: _ObjectSetup) -> DiarizeObject:
    aws, shared = setup.aws, setup.shared
    start_fanout = None
    if setup.fanout and aws.fanout_state_machine_arn:
        fan_out = StepFunctionsFanOut(aws.fanout_state_machine_arn)
        start_fanout = StartFanout(fan_out, setup.fanout, shared.store, shared.log, shared.telemetry)
    return DiarizeObject(
        diarizer,
        shared,
        deadline_margin_seconds=aws.deadline_margin_seconds,
        speed=setup.speed,
        workdir=setup.workdir,
        router=SageMakerRouter(aws.sagemaker_endpoint_name) if aws.sagemaker_endpoint_name else None,
        gpu_threshold_seconds=aws.gpu_threshold_seconds,
        idempotent=setup.idempotent,
        memory=MemoryBudget.of_this_process(env),
        formats=aws.output_formats,
        drop_voiceprints=setup.voiceprints.for_drops(aws.drop_voiceprint_owner, aws.drop_voiceprints),
        fanout=start_fanout,
    )


def _completion(
    settings: Settings, aws: AwsSettings, diarizer: Diarizer, shared: Shared, fanout: FanoutSettings | None
) -> tuple[CompleteInference, FanoutSteps | None]:
    """The completion of routed work, and the fan-out's steps (whose publish step ends in that completion)."""
    complete = CompleteInference(shared, aws.output_formats, voiceprint_threshold=settings.voiceprint_threshold)
    steps = FanoutSteps(diarizer, fanout, shared, complete) if fanout and shared.jobs else None
    return complete, steps


def _api(
    aws: AwsSettings,
    settings: Settings,
    shared: Shared,
    diarize_sync: DiarizeSync,
    voiceprints: Voiceprints,
    webhooks: Webhooks | None,
) -> Api:
    """The HTTP API, with job creation (its work queue: WORK_QUEUE_URL), the sync and voiceprint use cases, and with
    webhooks on, their URL policy and each owner's signing key."""
    create_job = CreateJob(
        shared,
        SqsJobQueue(aws.work_queue_url) if aws.work_queue_url else None,
        formats=aws.output_formats,
        url_expiry_seconds=aws.url_expiry_seconds,
        max_upload_bytes=settings.max_audio_bytes,
    )
    if webhooks is None:
        return Api(shared, aws, diarize_sync, create_job, voiceprints=voiceprints)
    callbacks = ApiCallbacks(webhooks.settings.policy, webhooks.signing_keys)
    return Api(shared, aws, diarize_sync, create_job, callbacks=callbacks, voiceprints=voiceprints)
