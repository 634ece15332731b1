"""Completion of GPU inferences: SageMaker's async success/error notification becomes the standard
result object (`results/{name}.json` + `.rttm`) or error object, the same completion event, and a
finished job — exactly what the object use case writes, so a user cannot tell where the work ran except
from the result's `model.device` and `timings`.

SageMaker's notification: `invocationStatus` (`Completed` or `Failed`), `requestParameters.inputLocation`,
`responseParameters.outputLocation` (or `failureLocation`), `failureReason`, `inferenceId`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from diarization.errors import (
    ERROR_CODES,
    AccessDeniedError,
    DiarizationError,
    GpuInferenceFailedError,
    InputNotFoundError,
    InvalidRequestError,
)
from diarization.result import Segment, rttm_from_segments
from diarization.service.locations import Locations, ObjectRef, parse_s3_uri
from diarization.service.model import Invocation
from diarization.service.ordering import Order, order_of
from diarization.service.outcomes import Failed, Skipped, Succeeded
from diarization.service.ports import JobStore, Log, ObjectStore, Telemetry
from diarization.service.publishing import Publisher


class CompleteInference:
    def __init__(
        self,
        locations: Locations,
        store: ObjectStore,
        publisher: Publisher,
        jobs: JobStore | None,
        log: Log,
        telemetry: Telemetry,
    ) -> None:
        self.locations = locations
        self.store = store
        self.publisher = publisher
        self.jobs = jobs
        self.log = log
        self.telemetry = telemetry

    def __call__(self, notification: dict[str, Any], invocation: Invocation) -> Succeeded | Failed | Skipped:
        try:
            input_uri = notification["requestParameters"]["inputLocation"]
            status = notification["invocationStatus"]
        except (KeyError, TypeError) as error:
            raise InvalidRequestError(f"Not a SageMaker async notification: missing {error}.") from error
        ref, order = self._current(parse_s3_uri(input_uri))
        outputs = self.locations.outputs(ref)
        inference_id = str(notification.get("inferenceId") or "")
        response = notification.get("responseParameters") or {}
        outcome: Succeeded | Failed | Skipped
        if status == "Completed":
            result = self.store.get_json(*_split(response["outputLocation"]))
            if result.get("schema_version", "").split(".")[0] != "1" or "segments" not in result:
                raise InvalidRequestError(f"{response['outputLocation']} is not a schema v1 result.")
            rttm = rttm_from_segments(ref.uri, [Segment(**segment) for segment in result["segments"]])
            outcome = Succeeded(
                input=ref.uri,
                version_id=ref.version_id,
                etag=ref.etag,
                output={"json": outputs.uri(outputs.json_key), "rttm": outputs.uri(outputs.rttm_key)},
                speaker_count=result["speaker_count"],
                duration_seconds=result["audio"]["duration_seconds"],
                timings=result["timings"],
                model={k: result["model"][k] for k in ("name", "trained", "device")},
                inference_id=inference_id,
            )
            outcome = self.publisher.succeeded(ref, outputs, result, rttm, outcome, order)
            self.telemetry.metric("GpuCompletions", "Count", 1)
        else:
            failure = self._error(notification, response)
            outcome = self.publisher.failed(ref, outputs, failure, invocation.request_id, inference_id, order)
        if self.jobs and inference_id:
            for job_id in self.jobs.end_inference(inference_id, outcome.to_dict()):
                self.jobs.finish(job_id, replace(outcome, job_id=job_id).to_dict())
        return outcome

    def _current(self, ref: ObjectRef) -> tuple[ObjectRef, Order | None]:
        """SageMaker read the current object (it takes no version id): the report is ordered as that version.
        An input that is gone or unreadable has no version to order by: the report is written as its latest word."""
        try:
            _, current = self.store.head(ref)
        except (InputNotFoundError, AccessDeniedError):
            return ref, None
        return current, order_of(current, None)

    def _error(self, notification: dict[str, Any], response: dict[str, Any]) -> DiarizationError:
        """Our server's error body when the container answered one, else SageMaker's reason."""
        location = response.get("failureLocation")
        if location:
            try:
                body = self.store.get_json(*_split(location)).get("error") or {}
                kind = ERROR_CODES.get(str(body.get("code")))
                if kind is not None:
                    return kind(str(body.get("message", "")), **(body.get("details") or {}))
            except (ValueError, KeyError, DiarizationError):
                self.log.warning("unreadable failure body at %s", location)
        reason = str(notification.get("failureReason") or "no reason given")
        return GpuInferenceFailedError(f"The GPU endpoint failed: {reason}", failure_location=location)


def _split(uri: str) -> tuple[str, str]:
    ref = parse_s3_uri(uri)
    return ref.bucket, ref.key
