"""Writing outcomes where users look: the result (JSON + the selected formats) or the error object (schema
`schema/error-v1.json`), the completion event, the failure metric. One place, used by the object and
the GPU completion use cases alike."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from diarization.errors import AccessDeniedError, DiarizationError, InputChangedError, InputNotFoundError
from diarization.outputs import formats
from diarization.service.locations import ErrorLocation, ObjectRef, OutputLocations
from diarization.service.ordering import SUPERSEDED, Order, version_of
from diarization.service.outcomes import Failed, Skipped, Succeeded
from diarization.service.ports import Log, Notifier, ObjectStore, OrderingRecord, Telemetry

ERROR_SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class Claim:
    """Whether a version may write its outputs, and the key's current version (None: gone or unreadable)."""

    granted: bool
    current: ObjectRef | None = None


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
        outcome: Succeeded,
        order: Order | None,
    ) -> Succeeded | Skipped:
        """Result and its selected formats, then drop a stale error object and stale outputs of formats not selected
        this time: the prefix describes the latest version. Rendered before anything is written, so a format that
        fails to render leaves the outputs as they were (and the run is retried)."""
        claim = self._claim(ref, order, succeeded=True)
        if not claim.granted:
            return superseded(ref, outputs, claim.current)
        rendered = {name: formats.render(result, name) for name in outputs.formats}
        self.store.put_json(outputs.bucket, outputs.json_key, result)
        for name, body in rendered.items():
            self.store.put_bytes(outputs.bucket, outputs.format_keys[name], body, formats.CONTENT_TYPES[name])
        for stale in (*outputs.unselected, outputs.error_key):
            self.store.delete(outputs.bucket, stale)
        if self.notifier:
            self.notifier.publish(outcome.to_dict())
        return outcome

    def _claim(self, ref: ObjectRef, order: Order | None, succeeded: bool) -> Claim:
        """See ``diarization.service.ordering``: still the current version, and the ordering record agrees."""
        if order is None:
            return Claim(granted=True)
        try:
            _, current = self.store.head(ObjectRef(ref.bucket, ref.key))
        except (InputNotFoundError, AccessDeniedError):
            return Claim(granted=False)  # deleted (or unreadable) meanwhile: no version of ours to describe
        if version_of(current) != order.version:
            return Claim(granted=False, current=current)
        granted = self.ordering is None or self.ordering.claim(ref.bucket, ref.key, order, succeeded)
        return Claim(granted=granted, current=current)

    def failed(
        self,
        ref: ObjectRef,
        outputs: OutputLocations | ErrorLocation,
        error: DiarizationError,
        request_id: str | None,
        inference_id: str | None = None,
        order: Order | None = None,
    ) -> Failed | Skipped | Succeeded:
        """`order` None: the version is unknown (it could not be read at all); written as the key's latest word.
        `outputs` is an `ErrorLocation` for a refused name (see ``diarization.service.locations``): its error object,
        possibly in the fallback folder, and no results to remove (the keys they would have are another input's).

        Refused when a newer version owns the outputs (its job ends with INPUT_CHANGED naming them), or when this
        version has already succeeded: a failure reported after the result was written (a late GPU failure, or work
        that died after writing and was dead-lettered) keeps the success, and the outcome is that success.
        """
        claim = self._claim(ref, order, succeeded=False)
        if not claim.granted:
            self.log.warning("not published, %s: %s", SUPERSEDED, error, extra={"error_code": error.code})
            same_version = (
                order is not None and claim.current is not None and version_of(claim.current) == order.version
            )
            if same_version and isinstance(outputs, OutputLocations):  # a refused name never has a success to keep
                return self._kept_success(ref, outputs, error, inference_id)
            return superseded(ref, outputs, claim.current)
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
            etag=ref.etag,
        )
        if self.notifier:
            self.notifier.publish(outcome.to_dict())
        return outcome

    def _kept_success(
        self, ref: ObjectRef, outputs: OutputLocations, error: DiarizationError, inference_id: str | None
    ) -> Succeeded | Skipped:
        """The success of this version, read back from its result: what its job ends with."""
        try:
            result = self.store.get_json(outputs.bucket, outputs.json_key)
            return succeeded_from_result(ref, outputs, result, inference_id)
        except (DiarizationError, ValueError, KeyError, TypeError):
            # The ordering record says it succeeded, but its result is gone or unreadable (deleted by hand): the
            # record still keeps this failure from writing, and the job ends failed with the error itself.
            self.log.warning("this version succeeded but its result cannot be read: %s", outputs.json_key)
            return Skipped(input=ref.uri, reason=SUPERSEDED, error=error.to_dict())


def succeeded_from_result(
    ref: ObjectRef, outputs: OutputLocations, result: dict[str, Any], inference_id: str | None = None
) -> Succeeded:
    """The outcome a written result stands for (schema v1), as the run that wrote it returned it."""
    return Succeeded(
        input=ref.uri,
        version_id=ref.version_id,
        etag=ref.etag,
        output=outputs.output_uris(),
        speaker_count=result["speaker_count"],
        duration_seconds=result["audio"]["duration_seconds"],
        timings=result["timings"],
        model={name: result["model"][name] for name in ("name", "trained", "device")},
        inference_id=inference_id,
    )


def superseded(ref: ObjectRef, outputs: OutputLocations | ErrorLocation, current: ObjectRef | None) -> Skipped:
    """Nothing is written for this version; its job (if any) ends failed with INPUT_CHANGED, naming the outputs
    that describe the key now, so whoever waited knows where to look."""
    result = outputs.uri(outputs.json_key) if isinstance(outputs, OutputLocations) else None
    if current is None:
        message = (
            f"{ref.uri} was deleted (or can no longer be read) before the outputs of this version "
            f"(ETag {ref.etag}) were written; nothing was written for it."
        )
    else:
        message = (
            f"{ref.uri} was replaced by a newer upload (ETag {current.etag}) before the outputs of this version "
            f"(ETag {ref.etag}) were written. The outputs describe the newer version: "
            f"{result or 'no result (a refused name)'}, or {outputs.uri(outputs.error_key)} if it failed. "
            "Create a new job to diarize the current object."
        )
    details: dict[str, Any] = {
        "expected_etag": ref.etag,
        "current_etag": current.etag if current else None,
        "result": result,
        "error_object": outputs.uri(outputs.error_key),
    }
    if ref.version_id or (current and current.version_id):
        details.update(version_id=ref.version_id, current_version_id=current.version_id if current else None)
    error = InputChangedError(message, **details)
    return Skipped(input=ref.uri, reason=SUPERSEDED, error=error.to_dict())
