"""Writing outcomes where users look: the result (JSON + RTTM) or the error object (schema
`schema/error-v1.json`), the completion event, the failure metric. One place, used by the object and
the GPU completion use cases alike."""

from __future__ import annotations

import datetime
from typing import Any

from diarization.errors import AccessDeniedError, DiarizationError, InputNotFoundError
from diarization.service.locations import ErrorLocation, ObjectRef, OutputLocations
from diarization.service.ordering import SUPERSEDED, Order, version_of
from diarization.service.outcomes import Failed, Skipped, Succeeded
from diarization.service.ports import Log, Notifier, ObjectStore, OrderingRecord, Telemetry

ERROR_SCHEMA_VERSION = "1.0"


class Publisher:
    def __init__(
        self,
        store: ObjectStore,
        notifier: Notifier | None,
        log: Log,
        telemetry: Telemetry,
        ordering: OrderingRecord | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.log = log
        self.telemetry = telemetry
        self.ordering = ordering

    def succeeded(
        self,
        ref: ObjectRef,
        outputs: OutputLocations,
        result: dict[str, Any],
        rttm: str,
        outcome: Succeeded,
        order: Order | None,
    ) -> Succeeded | Skipped:
        """Result and RTTM, then drop a stale error object: the prefix describes the latest version."""
        if self._superseded(ref, order, succeeded=True):
            return Skipped(input=ref.uri, reason=SUPERSEDED)
        self.store.put_json(outputs.bucket, outputs.json_key, result)
        self.store.put_text(outputs.bucket, outputs.rttm_key, rttm)
        self.store.delete(outputs.bucket, outputs.error_key)
        if self.notifier:
            self.notifier.publish(outcome.to_dict())
        return outcome

    def _superseded(self, ref: ObjectRef, order: Order | None, succeeded: bool) -> bool:
        """See ``diarization.service.ordering``: still the current version, and the ordering record agrees."""
        if order is None:
            return False
        try:
            _, current = self.store.head(ObjectRef(ref.bucket, ref.key))
        except (InputNotFoundError, AccessDeniedError):
            return True  # deleted (or unreadable) meanwhile: no version of ours to describe
        if version_of(current) != order.version:
            return True
        return self.ordering is not None and not self.ordering.claim(ref.bucket, ref.key, order, succeeded)

    def failed(
        self,
        ref: ObjectRef,
        outputs: OutputLocations | ErrorLocation,
        error: DiarizationError,
        request_id: str | None,
        inference_id: str | None = None,
        order: Order | None = None,
    ) -> Failed | Skipped:
        """`order` None: the version is unknown (it could not be read at all); written as the key's latest word.
        `outputs` is an `ErrorLocation` for a refused name (see ``diarization.service.locations``): its error object,
        possibly in the fallback folder, and no results to remove (the keys they would have are another input's)."""
        if self._superseded(ref, order, succeeded=False):
            self.log.warning("not published, %s: %s", SUPERSEDED, error, extra={"error_code": error.code})
            return Skipped(input=ref.uri, reason=SUPERSEDED)
        body = {
            "schema_version": ERROR_SCHEMA_VERSION,
            "status": "failed",
            "error": error.to_dict(),
            "input": {"uri": ref.uri, "version_id": ref.version_id, "etag": ref.etag},
            "request_id": request_id,
            "failed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        self.store.put_json(outputs.bucket, outputs.error_key, body)
        for stale in outputs.results:
            self.store.delete(outputs.bucket, stale)
        self.telemetry.failure(error.code)
        self.log.warning("failed: %s", error, extra={"error_code": error.code})
        outcome = Failed(
            input=ref.uri,
            version_id=ref.version_id,
            error={**error.to_dict(), "location": outputs.uri(outputs.error_key)},
            inference_id=inference_id,
        )
        if self.notifier:
            self.notifier.publish(outcome.to_dict())
        return outcome
