"""Diarize one S3 object end to end: the single path every trigger goes through.

head (size limit before download) -> [idempotency] -> download -> decode -> route (GPU or fan-out) or deadline guard
-> diarize -> write JSON + the selected formats (or .error.json) -> metrics, event, job. A bad file is a *handled*
outcome (an error object, no retry); only unexpected failures raise, so the host retries them
(SQS redelivers, then dead-letters).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

from diarization.core.audio import DecodedAudio
from diarization.core.capacity import MemoryBudget
from diarization.core.engine import Diarizer, decode_within_limits
from diarization.core.hints import SpeakerHints
from diarization.core.result import DiarizationResult
from diarization.core.voiceprints import Voiceprint
from diarization.errors import (
    AudioTooLargeError,
    AudioTooLongForLambdaError,
    ConfigurationError,
    DiarizationError,
    EmptyAudioError,
    InputChangedError,
    InputNotFoundError,
    JobAlreadyStartedError,
    KeyTooLongError,
    UploadAlreadyUsedError,
)
from diarization.outputs.formats import DEFAULT_OUTPUT_FORMATS, parse_formats
from diarization.service.deps import Shared, UseCase
from diarization.service.fanout import StartFanout
from diarization.service.locations import ObjectRef, OutputLocations, key_too_long
from diarization.service.long_audio import (
    DEFAULT_GPU_THRESHOLD_SECONDS,
    FANOUT,
    GPU,
    choose,
    fanout_reason,
    gpu_reason,
    memory_reason,
)
from diarization.service.model import Invocation, ObjectRequest
from diarization.service.ordering import Order, order_of, version_of
from diarization.service.outcomes import Outcome, Routed, Skipped, Succeeded, from_dict, with_job
from diarization.service.ports import GpuRouter, JobStore, Log, ObjectStore
from diarization.service.routing import Routing

FIXED_OVERHEAD_SECONDS = 2.0
"""Upload, events and bookkeeping after diarization."""

Idempotent = Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]
"""Wraps the run of one exact version so a redelivery returns the stored outcome (Powertools in Lambda)."""


class SpeedEstimate:
    """Seconds of diarization per second of audio: configured at first, then what this process measured."""

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


@dataclass(frozen=True)
class PinnedRun:
    """One exact version with everything its run depends on: what the run reads, and its :meth:`identity`."""

    ref: ObjectRef
    size: int
    hints: SpeakerHints
    job_id: str | None
    order: Order
    formats: tuple[str, ...] = DEFAULT_OUTPUT_FORMATS
    voiceprints: tuple[Voiceprint, ...] = ()
    """The job's voiceprints, as resolved when it was created (POST /jobs); the deployment's for a drop."""
    owner: str | None = None
    """The job's owner (the API caller that created it); None for an object dropped without a job."""

    def identity(self) -> list[Any]:
        """The run identity: the exact version, everything that changes the answer (hints, formats, the voiceprints
        as resolved, embeddings included) and who may see it (the job and its owner). Deliveries with one identity
        are one run (the idempotency key, ``diarization.aws.app.IDEMPOTENCY_KEY``); any difference is another run,
        so one job never replays another's outcome, nor one caller's names another's."""
        ref, voiceprints = self.ref, [voiceprint.to_dict() for voiceprint in self.voiceprints]
        answer = [self.hints.to_dict(), list(self.formats), voiceprints]
        return [ref.bucket, ref.key, ref.version_id, ref.etag, *answer, self.job_id, self.owner]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "bucket": self.ref.bucket,
            "key": self.ref.key,
            "version_id": self.ref.version_id,
            "etag": self.ref.etag,
            "size": self.size,
            "hints": self.hints.to_dict(),
            "job_id": self.job_id,
            "owner": self.owner,
            "order": [self.order.position, self.order.version],
            "formats": list(self.formats),
            "identity": self.identity(),
        }
        if self.voiceprints:
            body["voiceprints"] = [voiceprint.to_dict() for voiceprint in self.voiceprints]
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> PinnedRun:
        ref = ObjectRef(body["bucket"], body["key"], body["version_id"], body["etag"])
        voiceprints = tuple(Voiceprint.from_dict(item) for item in body.get("voiceprints", ()))
        hints = SpeakerHints.from_mapping(body["hints"])
        order = Order(*body["order"])
        formats = tuple(body["formats"])
        return cls(ref, body["size"], hints, body["job_id"], order, formats, voiceprints, body.get("owner"))


class Pinned(NamedTuple):
    """What ``pin_version`` found: the size, the exact version, and the event's sequencer if it named that version."""

    size: int
    ref: ObjectRef
    sequencer: str | None


def voiceprints_of(job: dict[str, Any]) -> tuple[Voiceprint, ...]:
    """A job's voiceprints, as resolved when it was created (one JSON string in its record)."""
    return tuple(Voiceprint.from_dict(item) for item in json.loads(job.get("voiceprints") or "[]"))


def inference_id_for(run: PinnedRun) -> str:
    """The run's name: its GPU inference id, or its fan-out execution's name and work prefix. The input version is
    in it, so two versions never share a name (nor staged audio). With a job: the job's id (an operator finds the job
    by it) and 16 hex digits of the version, 49 characters for a job id of 32 (SageMaker's InferenceId takes 64,
    Step Functions' execution names 80); without one, 32 hex digits of the version and the hints."""
    version = [run.ref.bucket, run.ref.key, run.ref.version_id, run.ref.etag]
    if run.job_id:
        return f"{run.job_id}-{hashlib.sha256(json.dumps(version).encode()).hexdigest()[:16]}"
    key = json.dumps([*version, run.hints.to_dict()])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def describes(outcome: dict[str, Any], ref: ObjectRef) -> bool | None:
    """Whether a job's outcome is about this version: by version id where the bucket has them, else by ETag; None
    when the outcome names neither (a superseded run, or a job ended before outcomes carried them)."""
    if ref.version_id and outcome.get("version_id"):
        return bool(outcome["version_id"] == ref.version_id)
    if ref.etag and outcome.get("etag"):
        return bool(outcome["etag"] == ref.etag)
    return None


def runs_on(job: dict[str, Any], ref: ObjectRef) -> bool:
    """Whether `ref` is the job's run (see ``JobStore.mark_running``), or may be: the job has not started, or the
    version of `ref` is unknown (its object could not be read) and its input is the job's."""
    recorded = job.get("run_input")
    if recorded is None:
        return True
    version = version_of(ref)
    return bool(recorded == ref.uri and (not version or job.get("run_version") == version))


def pin_version(store: ObjectStore, request: ObjectRequest, log: Log) -> tuple[int, ObjectRef, str | None]:
    """Size, the exact version, and the event's sequencer if that version is the one the event named.
    A key longer than S3 allows is KEY_TOO_LONG without asking S3: no such object can exist, and S3's answer (a 400)
    would be an unmapped error, retried and dead-lettered."""
    try:
        return _pin(store, request.ref, request.sequencer, log)
    except (InputNotFoundError, KeyTooLongError):
        decoded = unquote_plus(request.ref.key)
        if not request.key_may_be_encoded or decoded == request.ref.key:
            raise
        return _pin(store, replace(request.ref, key=decoded), request.sequencer, log)


def _pin(store: ObjectStore, ref: ObjectRef, sequencer: str | None, log: Log) -> tuple[int, ObjectRef, str | None]:
    """The version to process, pinned for the download by the ref returned.

    An event's ETag without a version id is a hint, not a condition: sample events (`sam local
    generate-event`) carry a placeholder, and a late event for an overwritten object names a version
    that is gone. The current version is processed instead; the ETag HEAD returns then pins it, so a
    change between here and the download is still INPUT_CHANGED, and the idempotency key (built from
    this ref) makes the late event and the newer version's own event one run.
    """
    too_long = key_too_long(ref)
    if too_long:
        raise too_long
    try:
        size, exact = store.head(ref)
        return size, exact, sequencer
    except InputChangedError:
        size, exact = store.head(replace(ref, etag=None))
        log.warning(
            "the event's ETag is stale; processing the current version",
            extra={"event_etag": ref.etag, "current_etag": exact.etag, "version_id": exact.version_id},
        )
        return size, exact, None  # not the event's version: its sequencer says nothing about this one


class DiarizeObject(UseCase):
    """The use case. Long-lived (one per process); everything about one call is in its arguments."""

    def __init__(
        self,
        diarizer: Diarizer,
        shared: Shared,
        *,
        deadline_margin_seconds: float,
        speed: SpeedEstimate,
        workdir: Path,
        router: GpuRouter | None = None,
        gpu_threshold_seconds: float = DEFAULT_GPU_THRESHOLD_SECONDS,
        idempotent: Idempotent | None = None,
        memory: MemoryBudget | None = None,
        formats: tuple[str, ...] = DEFAULT_OUTPUT_FORMATS,
        drop_voiceprints: Callable[[], tuple[Voiceprint, ...]] | None = None,
        fanout: StartFanout | None = None,
    ) -> None:
        """`drop_voiceprints`: the deployment's voiceprints for objects without a job (DROP_VOICEPRINTS), read per
        object so a re-enrolled voiceprint takes effect at once. `fanout`: the Step Functions route for long audio
        (``diarization.service.fanout``)."""
        self.fanout = fanout
        self.drop_voiceprints = drop_voiceprints
        self.diarizer = diarizer
        super().__init__(shared)
        self.jobs = shared.jobs
        self.deadline_margin_seconds = deadline_margin_seconds
        self.speed = speed
        self.workdir = workdir
        self.router = router
        self.gpu_threshold_seconds = gpu_threshold_seconds
        self.memory = memory
        self.formats = formats
        """The deployment's formats (OUTPUT_FORMATS); a job may name its own."""
        self._run_once = idempotent(self._run_stored) if idempotent else self._run_stored

    def __call__(self, request: ObjectRequest, invocation: Invocation) -> Outcome:
        ref = request.ref
        reason = self.locations.skip_reason(ref)
        if reason:
            self.log.info("skipping object: %s", reason)
            self.telemetry.metric("SkippedObjects", "Count", 1)
            return Skipped(input=ref.uri, reason=reason)
        job_id = request.job_id or self.locations.job_id_of_upload(ref)
        pinned: Pinned | DiarizationError
        try:  # first: a job starts on one exact version (its run), and no other starts it again
            pinned = Pinned(*pin_version(self.store, request, self.log))
        except DiarizationError as error:  # no version to run (gone, unreadable, a key S3 cannot hold): its outcome
            pinned = error
        started = pinned.ref if isinstance(pinned, Pinned) else ref
        if job_id and self.jobs and not self.jobs.mark_running(job_id, started):
            job = self.jobs.get(job_id)
            if job is not None:
                return self._not_started(request, job_id, job, pinned, invocation)
            self.log.warning("no job %s for this object; processing it as a plain upload", job_id)
            job_id = None
        outcome = with_job(self._outcome(request, job_id, pinned, invocation), job_id)
        self.telemetry.metric("ObjectsProcessed", "Count", 1)
        if job_id and self.jobs:
            self._end_job(self.jobs, job_id, outcome)
        return outcome

    def _outcome(
        self, request: ObjectRequest, job_id: str | None, pinned: Pinned | DiarizationError, invocation: Invocation
    ) -> Outcome:
        run: PinnedRun | None = None
        try:
            if isinstance(pinned, DiarizationError):
                raise pinned
            job = self._job(job_id)
            hints = SpeakerHints.from_mapping(request.hints or dict(job.get("hints") or {}))
            formats = self._formats_of(job)
            voiceprints = voiceprints_of(job) if job_id else self._drop_voiceprints()
            order = order_of(pinned.ref, pinned.sequencer)
            run = PinnedRun(pinned.ref, pinned.size, hints, job_id, order, formats, voiceprints, owner=job.get("owner"))
            # A name with no outputs of its own (see diarization.service.locations) fails here, permanently, for
            # every version alike; pinned first, so its error object describes and is ordered as that version.
            self.locations.check(pinned.ref)
            return from_dict(self._run_once(request=run.to_dict(), invocation=invocation))
        except DiarizationError as error:  # before the idempotent part (no version known yet), or not permanent
            failed = run.ref if run else request.ref
            return self.publisher.failed(
                failed,
                self.locations.error_location(failed),
                error,
                invocation.request_id,
                order=run.order if run else None,
            )

    def _not_started(
        self,
        request: ObjectRequest,
        job_id: str,
        job: dict[str, Any],
        pinned: Pinned | DiarizationError,
        invocation: Invocation,
    ) -> Outcome:
        """The job exists, and this is not its run: it has ended, or it runs another input or version."""
        if job.get("status") in ("queued", "running"):
            return self._another_run(request, job_id, job, pinned, invocation)
        return self._work_for_ended_job(request, job_id, job, pinned, invocation)

    def _another_run(
        self,
        request: ObjectRequest,
        job_id: str,
        job: dict[str, Any],
        pinned: Pinned | DiarizationError,
        invocation: Invocation,
    ) -> Outcome:
        """One run per job: the job has started on another input, or another version of this one (its `run_input`,
        `run_version`), and this object is not diarized. A file in the job's upload folder gets a JOB_ALREADY_STARTED
        error object, ordered like any run, so the outputs describe the object as it is (a newer version of the
        job's own upload supersedes the job's run, which then ends with INPUT_CHANGED); the job keeps its run. A job
        message delivered again after its object changed, or a file that can no longer be read, is skipped."""
        self.telemetry.metric("SecondRunsRefused", "Count", 1)
        run_input, run_version = str(job.get("run_input")), str(job.get("run_version"))
        started = f"{run_input} (version {run_version or 'unknown'})"
        if request.job_id is not None or not isinstance(pinned, Pinned):
            reason = f"job {job_id} has already started on {started}; a job runs once"
            self.log.warning("skipping object: %s", reason, extra={"job_id": job_id})
            return Skipped(input=request.ref.uri, reason=reason, job_id=job_id)
        exact = pinned.ref
        error = JobAlreadyStartedError(
            f"{exact.uri} was uploaded for job {job_id} after the job had started on {started}. A job diarizes one "
            "upload: this file is not diarized, and the job keeps its run. Create a new job (POST /jobs) for it.",
            job_id=job_id,
            run_input=run_input,
            run_version=run_version,
        )
        order = order_of(exact, pinned.sequencer)
        return self.publisher.failed(
            exact, self.locations.error_location(exact), error, invocation.request_id, order=order
        )

    def _work_for_ended_job(
        self,
        request: ObjectRequest,
        job_id: str,
        ended: dict[str, Any],
        pinned: Pinned | DiarizationError,
        invocation: Invocation,
    ) -> Outcome:
        """A job runs once. A redelivery of its object's event (or a late job message) after it ended is skipped. A
        new file written through its upload form after it ended (the form works until it expires) is not diarized
        either, but gets an UPLOAD_ALREADY_USED error object, ordered like any run: the outputs then describe the
        object as it is, not the job's earlier file. The job keeps its outcome. A running job is not ended: its
        redelivery (a crash, a timeout) runs."""
        self.telemetry.metric("WorkForEndedJobs", "Count", 1)
        status = str(ended.get("status"))
        reason = f"job {job_id} has already ended ({status}); a new upload needs a new job (POST /jobs)"
        exact = pinned.ref if isinstance(pinned, Pinned) else None
        if exact is None or describes(ended.get("outcome") or {}, exact) is not False:
            self.log.warning("skipping object: %s", reason, extra={"job_id": job_id, "job_status": status})
            return Skipped(input=request.ref.uri, reason=reason, job_id=job_id)
        error = UploadAlreadyUsedError(
            f"{exact.uri} was uploaded again after its job {job_id} had ended ({status}); the new file is not "
            "diarized and the job keeps its outcome. Create a new job (POST /jobs) for a new file.",
            job_id=job_id,
            job_status=status,
        )
        order = order_of(exact, pinned.sequencer) if isinstance(pinned, Pinned) else None
        return self.publisher.failed(
            exact, self.locations.error_location(exact), error, invocation.request_id, order=order
        )

    @staticmethod
    def _end_job(jobs: JobStore, job_id: str, outcome: Outcome) -> None:
        """Now, or when the GPU reports back for a routed one. A job may share an inference with others (the
        idempotent run replays the first job's routing); one that arrives after the inference ended ends now."""
        if not isinstance(outcome, Routed):
            jobs.finish(job_id, outcome.to_dict())
            return
        ended = jobs.wait_for_inference(job_id, outcome.inference_id)
        if ended is not None:
            jobs.finish(job_id, {**ended, "job_id": job_id})

    def _job(self, job_id: str | None) -> dict[str, Any]:
        """The job's record, read once per object: its hints, formats and voiceprints come from it ({}: no job)."""
        return (self.jobs.get(job_id) if job_id and self.jobs else None) or {}

    def _formats_of(self, job: dict[str, Any]) -> tuple[str, ...]:
        """A job's own `formats` (validated when it was created), else the deployment's."""
        named = job.get("formats")
        return self.formats if named is None else parse_formats(named)

    def _drop_voiceprints(self) -> tuple[Voiceprint, ...]:
        return self.drop_voiceprints() if self.drop_voiceprints else ()

    def _run_stored(self, request: dict[str, Any], invocation: Invocation) -> dict[str, Any]:
        """What the idempotency layer stores and replays: the outcome's dict."""
        return self._run(PinnedRun.from_dict(request), invocation).to_dict()

    def _run(self, run: PinnedRun, invocation: Invocation) -> Outcome:
        ref = run.ref
        outputs = self.locations.outputs(ref, run.formats)
        started = time.perf_counter()
        scratch: Path | None = None
        try:
            self._check_size(ref, run.size)
            scratch = Path(tempfile.mkdtemp(prefix="diarize-", dir=self.workdir))
            local = scratch / "input"
            with self.telemetry.span("## download") as span:
                span.put_annotation("size_bytes", run.size)
                self.store.download(ref, local)
            with self.telemetry.span("## decode") as span:
                audio, decode_seconds = decode_within_limits(self.diarizer.settings, local)
                span.put_annotation("audio_seconds", round(audio.duration_seconds, 3))
            local.unlink()
            available = self._available_seconds(invocation)
            needed = self.speed.seconds_for(audio.duration_seconds)
            routed = self._long_audio(run, audio, decode_seconds, needed, available)
            if routed is not None:
                return routed
            self._check_deadline(audio.duration_seconds, needed, available)
            with self.telemetry.span("## diarize") as span:
                result = self.diarizer.diarize_decoded(audio, run.hints, ref.uri, decode_seconds, run.voiceprints)
                span.put_annotation("speakers", len(result.speakers))
            self.speed.observe(audio.duration_seconds, result.timings.diarize_seconds)
        except DiarizationError as error:
            if not error.permanent:
                raise  # not remembered by idempotency: a later delivery with more time may succeed
            return self.publisher.failed(ref, outputs, error, invocation.request_id, order=run.order)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

        return self._publish(run, outputs, result, time.perf_counter() - started)

    def _publish(
        self, run: PinnedRun, outputs: OutputLocations, result: DiarizationResult, elapsed: float
    ) -> Succeeded | Skipped:
        """The result, its metrics and the succeeded outcome (or superseded: a newer version owns the outputs)."""
        ref = run.ref
        result_json = result.to_dict()
        self.telemetry.metric("AudioSeconds", "Seconds", result.audio.duration_seconds)
        self.telemetry.metric("ProcessingSeconds", "Seconds", round(elapsed, 3))
        self.telemetry.metric("RealTimeFactor", "None", result.timings.real_time_factor)
        self.telemetry.metric("SpeakersDetected", "Count", len(result.speakers))
        outcome = Succeeded(
            input=ref.uri,
            version_id=ref.version_id,
            etag=ref.etag,
            output=outputs.output_uris(),
            speaker_count=len(result.speakers),
            duration_seconds=result.audio.duration_seconds,
            timings={**result_json["timings"], "processing_seconds": round(elapsed, 3)},
            model={"name": result.model.name, "trained": result.model.trained, "device": result.model.device},
        )
        with self.telemetry.span("## upload"):
            published = self.publisher.succeeded(ref, outputs, result_json, outcome, run.order)
        self.log.info(
            "diarized",
            extra={
                "speakers": len(result.speakers),
                "audio_seconds": result.audio.duration_seconds,
                "published": published is outcome,
            },
        )
        return published

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

    def _available_seconds(self, invocation: Invocation) -> float | None:
        left = invocation.seconds_left()
        return None if left is None else left - self.deadline_margin_seconds

    def _long_audio(
        self, run: PinnedRun, audio: DecodedAudio, decode_seconds: float, needed: float, available: float | None
    ) -> Routed | None:
        """Where long audio goes (``diarization.service.long_audio``), None: here."""
        seconds = audio.duration_seconds
        memory = memory_reason(self.memory, seconds, gpu_deployed=self.router is not None)
        if memory and self.router:
            return self._route(self.router, run, seconds, memory)
        gpu = gpu_reason(seconds, needed, available, self.gpu_threshold_seconds) if self.router else None
        fan = fanout_reason(self.fanout.settings.mode, audio, needed, available) if self.fanout else None
        chosen = choose(gpu, fan, prefer_gpu=bool(self.fanout and self.fanout.settings.prefer_gpu))
        if chosen is not None and chosen.route == FANOUT and self.fanout:
            return self._fan_out(self.fanout, run, audio, decode_seconds, chosen.reason)
        if chosen is not None and chosen.route == GPU and self.router:
            return self._route(self.router, run, seconds, chosen.reason)
        return None

    def _fan_out(
        self, fanout: StartFanout, run: PinnedRun, audio: DecodedAudio, decode_seconds: float, reason: str
    ) -> Routed:
        """Staged and started under the run's inference id: a redelivery of the same run is the same execution."""
        if self.jobs is None:
            raise ConfigurationError("Fan-out needs JOBS_TABLE: its steps and completion are checked against it.")
        name = inference_id_for(run)
        routing = fanout.routing(name, run.ref, run.hints, run.formats, run.voiceprints, run.order)
        return fanout(self.jobs, name, routing, audio, decode_seconds, reason)

    def _route(self, router: GpuRouter, run: PinnedRun, audio_seconds: float, reason: str) -> Routed:
        """Submit, then record what was submitted: its completion is only trusted if it matches the record
        (``diarization.service.routing``), and the record's deadline ends it if the GPU never reports."""
        if self.jobs is None:
            raise ConfigurationError("Routing to the GPU needs JOBS_TABLE: completions are checked against it.")
        # The GPU result is named here, at completion, with the voiceprints recorded below: the endpoint only returns
        # the speakers' centroids (asked for only when there is something to match them against).
        submitted = router.submit(run.ref, run.hints, inference_id_for(run), speaker_embeddings=bool(run.voiceprints))
        self.jobs.record_routing(
            Routing(
                inference_id=submitted["inference_id"],
                ref=run.ref,
                output_location=submitted.get("output_location"),
                failure_location=submitted.get("failure_location"),
                formats=run.formats,
                voiceprints=run.voiceprints,
                order=run.order,
            )
        )
        self.telemetry.metric("RoutedToGpu", "Count", 1)
        self.log.info("routed to the GPU endpoint: %s", reason, extra=submitted)
        return Routed(
            input=run.ref.uri,
            version_id=run.ref.version_id,
            etag=run.ref.etag,
            endpoint=router.endpoint_name,
            reason=reason,
            duration_seconds=round(audio_seconds, 3),
            inference_id=submitted["inference_id"],
            output_location=submitted.get("output_location"),
            failure_location=submitted.get("failure_location"),
        )

    def _check_deadline(self, audio_seconds: float, needed: float, available: float | None) -> None:
        if available is not None and needed > available:
            remaining = available + self.deadline_margin_seconds
            raise AudioTooLongForLambdaError(
                f"{audio_seconds:.0f} s of audio needs about {needed:.0f} s, but this invocation has "
                f"{remaining:.0f} s left (margin {self.deadline_margin_seconds:.0f} s). "
                "Raise the function timeout, or send long audio to the GPU endpoint.",
                audio_seconds=round(audio_seconds, 3),
                estimated_seconds=round(needed, 1),
                remaining_seconds=round(remaining, 1),
                real_time_factor=round(self.speed.real_time_factor, 4),
            )
