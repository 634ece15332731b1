"""Writing outcomes where users look: the result (JSON + RTTM) or the error object (schema
`schema/error-v1.json`), the completion event, the failure metric. One place, used by the Lambda path
and the GPU completion path alike."""

from __future__ import annotations

import datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from diarization.aws.locations import ObjectRef, OutputLocations
from diarization.aws.notifications import Notifier
from diarization.aws.storage import S3Store
from diarization.errors import DiarizationError

ERROR_SCHEMA_VERSION = "1.0"


class Publisher:
    def __init__(self, store: S3Store, notifier: Notifier | None, logger: Logger, metrics: Metrics) -> None:
        self.store = store
        self.notifier = notifier
        self.logger = logger
        self.metrics = metrics

    def succeeded(self, outputs: OutputLocations, result: dict[str, Any], rttm: str, outcome: dict[str, Any]) -> None:
        """Result and RTTM, then drop a stale error object: the prefix describes the latest version."""
        self.store.put_json(outputs.bucket, outputs.json_key, result)
        self.store.put_text(outputs.bucket, outputs.rttm_key, rttm)
        self.store.delete(outputs.bucket, outputs.error_key)
        if self.notifier:
            self.notifier.publish(outcome)

    def failed(
        self, ref: ObjectRef, outputs: OutputLocations, error: DiarizationError, request_id: str | None
    ) -> dict[str, Any]:
        body = {
            "schema_version": ERROR_SCHEMA_VERSION,
            "status": "failed",
            "error": error.to_dict(),
            "input": {"uri": ref.uri, "version_id": ref.version_id, "etag": ref.etag},
            "request_id": request_id,
            "failed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        self.store.put_json(outputs.bucket, outputs.error_key, body)
        for stale in (outputs.json_key, outputs.rttm_key):
            self.store.delete(outputs.bucket, stale)
        with single_metric(name="Failures", unit=MetricUnit.Count, value=1, namespace=self.metrics.namespace) as metric:
            metric.add_dimension(name="ErrorCode", value=error.code)
        self.logger.warning("failed: %s", error, extra={"error_code": error.code})
        outcome = {
            "status": "failed",
            "input": ref.uri,
            "version_id": ref.version_id,
            "error": {**error.to_dict(), "location": outputs.uri(outputs.error_key)},
        }
        if self.notifier:
            self.notifier.publish(outcome)
        return outcome
