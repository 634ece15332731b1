"""Process one S3 object end to end: the single path every trigger goes through.

head (size limit before download) -> [idempotency] -> download -> decode -> deadline guard
-> diarize -> write JSON + RTTM (or .error.json) -> metrics, event, job. A bad file is a
*handled* outcome (an error object, no retry); only unexpected failures raise, so SQS retries
them and eventually dead-letters them.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from diarization.aws.events import WorkItem
from diarization.aws.jobs import JobStore
from diarization.aws.locations import Locations, ObjectRef, OutputLocations
from diarization.aws.notifications import Notifier
from diarization.aws.publishing import Publisher
from diarization.aws.routing import GpuRouter, inference_id_for
from diarization.aws.settings import AwsSettings
from diarization.aws.storage import S3Store
from diarization.engine import Diarizer, decode_within_limits
from diarization.errors import (
    AudioTooLargeError,
    AudioTooLongForLambdaError,
    DiarizationError,
    EmptyAudioError,
    InputChangedError,
    InputNotFoundError,
)
from diarization.hints import SpeakerHints

FIXED_OVERHEAD_SECONDS = 2.0
"""Upload, events and bookkeeping after diarization."""


class SpeedEstimate:
    """Seconds of diarization per second of audio: configured at first, then what this container measured."""

    def __init__(self, initial: float) -> None:
        self.real_time_factor = initial
        self.measured = False

    def seconds_for(self, audio_seconds: float) -> float:
        return audio_seconds * self.real_time_factor + FIXED_OVERHEAD_SECONDS

    def observe(self, audio_seconds: float, seconds: float) -> None:
        if audio_seconds < 10:  # fixed costs dominate short files and would overstate the speed
            return
        observed = seconds / audio_seconds
        self.real_time_factor = observed if not self.measured else 0.5 * (self.real_time_factor + observed)
        self.measured = True


class Processor:
    def __init__(
        self,
        diarizer: Diarizer,
        settings: AwsSettings,
        store: S3Store,
        jobs: JobStore | None,
        notifier: Notifier | None,
        logger: Logger,
        metrics: Metrics,
        tracer: Tracer,
        idempotent: Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]] | None = None,
        workdir: Path | None = None,
        router: GpuRouter | None = None,
    ) -> None:
        self.diarizer = diarizer
        self.settings = settings
        self.locations = Locations(settings)
        self.store = store
        self.jobs = jobs
        self.publisher = Publisher(store, notifier, logger, metrics)
        self.logger = logger
        self.metrics = metrics
        self.tracer = tracer
        self.workdir = workdir or Path(tempfile.gettempdir())
        self.speed = SpeedEstimate(settings.expected_real_time_factor)
        self.router = router
        self._run_once = idempotent(self._run) if idempotent else self._run
        self._context: Any = None

    def process(self, item: WorkItem, context: Any) -> dict[str, Any]:
        """Outcome summary: ``status`` is ``succeeded``, ``failed``, ``skipped`` or ``routed`` (to the GPU)."""
        ref = item.ref
        self.logger.append_keys(s3_bucket=ref.bucket, s3_key=ref.key)
        reason = self.locations.skip_reason(ref)
        if reason:
            self.logger.info("skipping object: %s", reason)
            self.metrics.add_metric(name="SkippedObjects", unit=MetricUnit.Count, value=1)
            return {"status": "skipped", "reason": reason, "input": ref.uri}
        job_id = item.job_id or self.locations.job_id_of_upload(ref)
        if job_id and self.jobs and not self.jobs.mark_running(job_id):
            self.logger.warning("no job %s for this object; processing it as a plain upload", job_id)
            job_id = None
        self._context = context
        try:
            hints = SpeakerHints.from_mapping(item.hints or self._job_hints(job_id))
            size, exact = self._head(item)
            request = {
                "bucket": exact.bucket,
                "key": exact.key,
                "version_id": exact.version_id,
                "etag": exact.etag,
                "size": size,
                "hints": hints.to_dict(),
                "job_id": job_id,
            }
            outcome = self._run_once(request=request)
        except DiarizationError as error:  # before the idempotent part, or not permanent
            outcome = self._failed(ref, self.locations.outputs(ref), error)
        self.metrics.add_metric(name="ObjectsProcessed", unit=MetricUnit.Count, value=1)
        if job_id and self.jobs:
            outcome = {**outcome, "job_id": job_id}
            if outcome["status"] != "routed":  # a routed job finishes when the GPU reports back
                self.jobs.finish(job_id, outcome)
        return outcome

    def _job_hints(self, job_id: str | None) -> dict[str, Any]:
        job = self.jobs.get(job_id) if job_id and self.jobs else None
        return dict((job or {}).get("hints") or {})

    def _head(self, item: WorkItem) -> tuple[int, ObjectRef]:
        try:
            return self._head_exact(item.ref)
        except InputNotFoundError:
            decoded = unquote_plus(item.ref.key)
            if not item.key_may_be_encoded or decoded == item.ref.key:
                raise
            return self._head_exact(replace(item.ref, key=decoded))

    def _head_exact(self, ref: ObjectRef) -> tuple[int, ObjectRef]:
        """The version to process, pinned for the download by the ref returned.

        An event's ETag without a version id is a hint, not a condition: sample events (`sam local
        generate-event`) carry a placeholder, and a late event for an overwritten object names a version
        that is gone. The current version is processed instead; the ETag HEAD returns then pins it, so a
        change between here and the download is still INPUT_CHANGED, and the idempotency key (built from
        this ref) makes the late event and the newer version's own event one run.
        """
        try:
            return self.store.head(ref)
        except InputChangedError:
            size, exact = self.store.head(replace(ref, etag=None))
            self.logger.warning(
                "the event's ETag is stale; processing the current version",
                extra={"event_etag": ref.etag, "current_etag": exact.etag, "version_id": exact.version_id},
            )
            return size, exact

    def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        ref = ObjectRef(request["bucket"], request["key"], request["version_id"], request["etag"])
        outputs = self.locations.outputs(ref)
        hints = SpeakerHints.from_mapping(request["hints"])
        started = time.perf_counter()
        scratch: Path | None = None
        try:
            self._check_size(ref, request["size"])
            scratch = Path(tempfile.mkdtemp(prefix="diarize-", dir=self.workdir))
            local = scratch / "input"
            with self.tracer.provider.in_subsegment("## download") as segment:
                segment.put_annotation("size_bytes", request["size"])
                self.store.download(ref, local)
            with self.tracer.provider.in_subsegment("## decode") as segment:
                audio, decode_seconds = decode_within_limits(self.diarizer.settings, local)
                segment.put_annotation("audio_seconds", round(audio.duration_seconds, 3))  # type: ignore[arg-type]
            local.unlink()
            route = self._route_reason(audio.duration_seconds)
            if route and self.router:
                return self._route(self.router, request, ref, hints, audio.duration_seconds, route)
            self._check_deadline(audio.duration_seconds)
            with self.tracer.provider.in_subsegment("## diarize") as segment:
                result = self.diarizer.diarize_decoded(audio, hints, ref.uri, decode_seconds)
                segment.put_annotation("speakers", len(result.speakers))  # type: ignore[arg-type]
            self.speed.observe(audio.duration_seconds, result.timings.diarize_seconds)
        except DiarizationError as error:
            if not error.permanent:
                raise  # not remembered by idempotency: a later delivery with more time may succeed
            return self._failed(ref, outputs, error)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

        elapsed = time.perf_counter() - started
        result_json = result.to_dict()
        self.metrics.add_metric(name="AudioSeconds", unit=MetricUnit.Seconds, value=result.audio.duration_seconds)
        self.metrics.add_metric(name="ProcessingSeconds", unit=MetricUnit.Seconds, value=round(elapsed, 3))
        self.metrics.add_metric(name="RealTimeFactor", unit=MetricUnit.NoUnit, value=result.timings.real_time_factor)
        self.metrics.add_metric(name="SpeakersDetected", unit=MetricUnit.Count, value=len(result.speakers))
        outcome = {
            "status": "succeeded",
            "input": ref.uri,
            "version_id": ref.version_id,
            "etag": ref.etag,
            "output": {"json": outputs.uri(outputs.json_key), "rttm": outputs.uri(outputs.rttm_key)},
            "speaker_count": len(result.speakers),
            "duration_seconds": result.audio.duration_seconds,
            "timings": {**result_json["timings"], "processing_seconds": round(elapsed, 3)},
            "model": {"name": result.model.name, "trained": result.model.trained, "device": result.model.device},
        }
        with self.tracer.provider.in_subsegment("## upload"):
            self.publisher.succeeded(outputs, result_json, result.to_rttm(), outcome)
        self.logger.info(
            "diarized", extra={"speakers": len(result.speakers), "audio_seconds": result.audio.duration_seconds}
        )
        return outcome

    def _check_size(self, ref: ObjectRef, size: int) -> None:
        """From HeadObject, before anything is downloaded."""
        max_bytes = self.diarizer.settings.max_audio_bytes
        if size > max_bytes:
            raise AudioTooLargeError(
                f"{ref.uri} is {size} bytes; the limit is {max_bytes} bytes (MAX_AUDIO_BYTES).",
                size_bytes=size,
                max_bytes=max_bytes,
            )
        if size == 0:
            raise EmptyAudioError(f"{ref.uri} is empty (0 bytes).", size_bytes=0)

    def _available_seconds(self) -> float | None:
        if self._context is None or not hasattr(self._context, "get_remaining_time_in_millis"):
            return None
        return float(self._context.get_remaining_time_in_millis() / 1000 - self.settings.deadline_margin_seconds)

    def _route_reason(self, audio_seconds: float) -> str | None:
        if self.router is None:
            return None
        return self.router.reason(audio_seconds, self.speed.seconds_for(audio_seconds), self._available_seconds())

    def _route(
        self,
        router: GpuRouter,
        request: dict[str, Any],
        ref: ObjectRef,
        hints: SpeakerHints,
        audio_seconds: float,
        reason: str,
    ) -> dict[str, Any]:
        submitted = router.submit(ref, hints, inference_id_for(request))
        self.metrics.add_metric(name="RoutedToGpu", unit=MetricUnit.Count, value=1)
        self.logger.info("routed to the GPU endpoint: %s", reason, extra=submitted)
        return {
            "status": "routed",
            "input": ref.uri,
            "version_id": ref.version_id,
            "etag": ref.etag,
            "endpoint": router.endpoint_name,
            "reason": reason,
            "duration_seconds": round(audio_seconds, 3),
            **submitted,
        }

    def _check_deadline(self, audio_seconds: float) -> None:
        available = self._available_seconds()
        needed = self.speed.seconds_for(audio_seconds)
        if available is not None and needed > available:
            remaining = available + self.settings.deadline_margin_seconds
            raise AudioTooLongForLambdaError(
                f"{audio_seconds:.0f} s of audio needs about {needed:.0f} s, but this invocation has "
                f"{remaining:.0f} s left (margin {self.settings.deadline_margin_seconds:.0f} s). "
                "Raise the function timeout, or send long audio to the GPU endpoint.",
                audio_seconds=round(audio_seconds, 3),
                estimated_seconds=round(needed, 1),
                remaining_seconds=round(remaining, 1),
                real_time_factor=round(self.speed.real_time_factor, 4),
            )

    def _failed(self, ref: ObjectRef, outputs: OutputLocations, error: DiarizationError) -> dict[str, Any]:
        return self.publisher.failed(ref, outputs, error, getattr(self._context, "aws_request_id", None))
