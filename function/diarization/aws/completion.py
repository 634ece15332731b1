"""Completion of GPU jobs: SageMaker's async success/error notifications (via SNS) become the standard
result object (`results/{name}.json` + `.rttm`) or error object, the same completion event, and a
finished job — exactly what the Lambda path writes, so a user cannot tell where the work ran except
from the result's `model.device` and `timings`.

SageMaker's notification (the SNS message): `invocationStatus` (`Completed` or `Failed`),
`requestParameters.inputLocation`, `responseParameters.outputLocation` (or `failureLocation`),
`failureReason`, `inferenceId`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from diarization.aws.jobs import JobStore
from diarization.aws.locations import Locations, parse_s3_uri
from diarization.aws.publishing import Publisher
from diarization.aws.storage import S3Store
from diarization.errors import ERROR_CODES, DiarizationError, GpuInferenceFailedError, InvalidRequestError
from diarization.result import Segment, rttm_from_segments


class Completion:
    def __init__(
        self,
        locations: Locations,
        store: S3Store,
        publisher: Publisher,
        jobs: JobStore | None,
        logger: Logger,
        metrics: Metrics,
    ) -> None:
        self.locations = locations
        self.store = store
        self.publisher = publisher
        self.jobs = jobs
        self.logger = logger
        self.metrics = metrics

    def handle(self, notification: dict[str, Any], request_id: str | None) -> dict[str, Any]:
        try:
            input_uri = notification["requestParameters"]["inputLocation"]
            status = notification["invocationStatus"]
        except (KeyError, TypeError) as error:
            raise InvalidRequestError(f"Not a SageMaker async notification: missing {error}.") from error
        ref = parse_s3_uri(input_uri)
        outputs = self.locations.outputs(ref)
        inference_id = str(notification.get("inferenceId") or "")
        response = notification.get("responseParameters") or {}
        self.logger.append_keys(inference_id=inference_id, s3_key=ref.key)
        if status == "Completed":
            result = self.store.get_json(*_split(response["outputLocation"]))
            if result.get("schema_version", "").split(".")[0] != "1" or "segments" not in result:
                raise InvalidRequestError(f"{response['outputLocation']} is not a schema v1 result.")
            rttm = rttm_from_segments(ref.uri, [Segment(**segment) for segment in result["segments"]])
            outcome = {
                "status": "succeeded",
                "input": ref.uri,
                "output": {"json": outputs.uri(outputs.json_key), "rttm": outputs.uri(outputs.rttm_key)},
                "speaker_count": result["speaker_count"],
                "duration_seconds": result["audio"]["duration_seconds"],
                "timings": result["timings"],
                "model": {k: result["model"][k] for k in ("name", "trained", "device")},
                "inference_id": inference_id,
            }
            self.publisher.succeeded(outputs, result, rttm, outcome)
            self.metrics.add_metric(name="GpuCompletions", unit=MetricUnit.Count, value=1)
        else:
            outcome = {
                **self.publisher.failed(ref, outputs, self._error(notification, response), request_id),
                "inference_id": inference_id,
            }
        job = self.jobs.get(inference_id) if self.jobs and inference_id else None
        if job and self.jobs:
            self.jobs.finish(inference_id, {**outcome, "job_id": inference_id})
        return outcome

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
                self.logger.warning("unreadable failure body at %s", location)
        reason = str(notification.get("failureReason") or "no reason given")
        return GpuInferenceFailedError(f"The GPU endpoint failed: {reason}", failure_location=location)


def _split(uri: str) -> tuple[str, str]:
    ref = parse_s3_uri(uri)
    return ref.bucket, ref.key
