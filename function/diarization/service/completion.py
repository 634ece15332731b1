"""Completion of routed inferences (GPU, and fan-out executions, whose publish step sends the same notification):
SageMaker's async success/error notification becomes the standard
result object (`results/{name}.json` + the selected formats) or error object, the same completion event, and a
finished job — exactly what the object use case writes, so a user cannot tell where the work ran except
from the result's `model.device` and `timings`. A run with voiceprints has its speakers named here, from the
centroids the endpoint returns (``diarization.service.identify_result``).

SageMaker's notification: `invocationStatus` (`Completed` or `Failed`), `requestParameters.inputLocation`,
`responseParameters.outputLocation` (or `failureLocation`), `failureReason`, `inferenceId`.

Only a notification that matches what was routed is acted on (see ``diarization.service.routing``); any other is
skipped with a warning and the ``UntrustedCompletions`` metric, never raised: SNS would retry it. A trusted success
whose output cannot be read becomes a failure like any other, so its job ends: GPU_INFERENCE_FAILED for the endpoint,
FANOUT_FAILED for a fan-out (the code names where to look: the endpoint's logs or the execution's history).
"""

from __future__ import annotations

from typing import Any

from diarization.core.config import DEFAULT_VOICEPRINT_THRESHOLD
from diarization.errors import (
    ERROR_CODES,
    AccessDeniedError,
    DiarizationError,
    FanoutFailedError,
    GpuInferenceFailedError,
    InputChangedError,
    InputNotFoundError,
    VoiceprintModelMismatchError,
)
from diarization.outputs.formats import DEFAULT_OUTPUT_FORMATS, render
from diarization.service.deps import Shared, UseCase
from diarization.service.identify_result import name_speakers
from diarization.service.locations import ObjectRef, OutputLocations, parse_s3_uri
from diarization.service.model import Invocation
from diarization.service.ordering import Order, order_of, version_of
from diarization.service.outcomes import Failed, Skipped, Succeeded, with_job
from diarization.service.publishing import succeeded_from_result
from diarization.service.routing import STEPFUNCTIONS, Completion, Routing, check_completion

UNTRUSTED = "untrusted completion"
MAX_INFERENCE_ID = 64
"""InvokeEndpointAsync's limit on InferenceId."""


class CompleteInference(UseCase):
    def __init__(
        self,
        shared: Shared,
        formats: tuple[str, ...] = DEFAULT_OUTPUT_FORMATS,
        voiceprint_threshold: float = DEFAULT_VOICEPRINT_THRESHOLD,
    ) -> None:
        self.voiceprint_threshold = voiceprint_threshold
        """VOICEPRINT_THRESHOLD: routed results are named here, as the Lambda function names its own."""
        self.formats = formats
        """The deployment's OUTPUT_FORMATS: for routings recorded without formats of their own."""
        super().__init__(shared)
        self.jobs = shared.jobs

    def __call__(self, notification: dict[str, Any], invocation: Invocation) -> Succeeded | Failed | Skipped:
        inference_id = str(notification.get("inferenceId") or "")
        # Without a jobs table nothing was routed (the host refuses SAGEMAKER_ENDPOINT_NAME without JOBS_TABLE). An id
        # longer than SageMaker allows was never routed, and is not looked up (an oversized key would raise).
        known = 0 < len(inference_id) <= MAX_INFERENCE_ID
        routing = self.jobs.routing(inference_id) if self.jobs and known else None
        completion, reason = check_completion(notification, routing, self.locations)
        if completion is None:
            return self._untrusted(notification, inference_id, str(reason))
        ref, order = self._routed(completion.routing)
        formats = self.formats if completion.routing.formats is None else completion.routing.formats
        outputs = self.locations.outputs(ref, formats)
        outcome: Succeeded | Failed | Skipped
        error = None if completion.completed else self._error(completion)
        if error is None:
            try:
                outcome = self._succeeded(ref, order, completion, outputs)
            except (GpuInferenceFailedError, FanoutFailedError, VoiceprintModelMismatchError) as refused:
                error = refused
        if error is not None:
            outcome = self.publisher.failed(ref, outputs, error, invocation.request_id, inference_id, order)
        if self.jobs:
            for job_id in self.jobs.end_inference(inference_id, outcome.to_dict()):
                self.jobs.finish(job_id, with_job(outcome, job_id).to_dict())
        return outcome

    def _succeeded(
        self, ref: ObjectRef, order: Order, completion: Completion, outputs: OutputLocations
    ) -> Succeeded | Skipped:
        location = completion.output_location
        if not location:
            raise _engine_failure(completion.routing, "reported success without an outputLocation.")
        try:
            output = self.store.get_json(*_split(location))
            if str(output.get("schema_version", "")).split(".")[0] != "1":
                raise ValueError("not a schema v1 result")
            routing = completion.routing
            result = name_speakers(output, routing.voiceprints, self.voiceprint_threshold)
            for name in outputs.formats:  # a result no format can render is unreadable too: known before writing
                render(result, name)
            outcome = succeeded_from_result(ref, outputs, result, routing.inference_id)
        except VoiceprintModelMismatchError:
            raise  # the voiceprints' fault, not the endpoint's: the error object the Lambda path writes for them
        except (DiarizationError, ValueError, KeyError, TypeError) as error:
            raise _engine_failure(
                completion.routing,
                f"reported success, but its output {location} is unreadable: {error}",
                output_location=location,
            ) from error
        published = self.publisher.succeeded(ref, outputs, result, outcome, order)
        self.telemetry.metric("FanoutCompletions" if routing.engine == STEPFUNCTIONS else "GpuCompletions", "Count", 1)
        return published

    def _untrusted(self, notification: dict[str, Any], inference_id: str, reason: str) -> Skipped:
        request = notification.get("requestParameters")
        named = request.get("inputLocation") if isinstance(request, dict) else None
        self.log.warning(
            "%s: %s", UNTRUSTED, reason, extra={"inference_id": inference_id[:100], "input": str(named)[:300]}
        )
        self.telemetry.metric("UntrustedCompletions", "Count", 1)
        return Skipped(input=str(named)[:1100] if named else "", reason=f"{UNTRUSTED}: {reason}")

    def _routed(self, routing: Routing) -> tuple[ObjectRef, Order]:
        """A report is about the version that was routed, and is published as that version only: the publish gate
        refuses it as superseded once a newer version is current (or the input is gone), so a late report never
        replaces the newer version's outputs, whatever it says. SageMaker reads the current object (it takes no
        version id): when the routed version was replaced before the GPU read it, the report describes the newer
        bytes and is refused the same way; the newer version has its own run.

        A routing recorded before routings kept their order: the routed version's, read back (a version that is
        gone has no place to take; the gate refuses it)."""
        if routing.order is not None:
            return routing.ref, routing.order
        try:
            _, exact = self.store.head(routing.ref)
        except (InputNotFoundError, AccessDeniedError, InputChangedError):
            return routing.ref, Order("", version_of(routing.ref))
        return routing.ref, order_of(exact, None)

    def _error(self, completion: Completion) -> DiarizationError:
        """Our server's error body when the container answered one, else SageMaker's reason."""
        location = completion.failure_location
        if location:
            try:
                body = self.store.get_json(*_split(location)).get("error") or {}
                kind = ERROR_CODES.get(str(body.get("code")))
                if kind is not None:
                    return kind(str(body.get("message", "")), **(body.get("details") or {}))
            except (ValueError, KeyError, TypeError, DiarizationError):
                self.log.warning("unreadable failure body at %s", location)
        return _engine_failure(completion.routing, f"failed: {completion.failure_reason}", failure_location=location)


def _engine_failure(routing: Routing, what: str, **details: Any) -> GpuInferenceFailedError | FanoutFailedError:
    """An untyped failure, named after where the work ran, so the code points at the right logs."""
    if routing.engine == STEPFUNCTIONS:
        return FanoutFailedError(
            f"The fan-out (execution {routing.inference_id}) {what}", execution=routing.inference_id, **details
        )
    return GpuInferenceFailedError(f"The GPU endpoint {what}", **details)


def _split(uri: str) -> tuple[str, str]:
    ref = parse_s3_uri(uri)
    return ref.bucket, ref.key
