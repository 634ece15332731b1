"""The use cases against in-memory ports: real decoding and the model-free engine double
(tests/support/engine_double.py), no AWS of any kind. The pipeline itself is tested on real audio with real pyannote
elsewhere (test_engine.py ...)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from diarization.core.capacity import MemoryBudget
from diarization.core.engine import Diarizer, decode_within_limits
from diarization.core.hints import SpeakerHints
from diarization.errors import AudioTooLongForMemoryError, InvalidAudioError, TooLongForSyncError
from diarization.service.diarize_object import FIXED_OVERHEAD_SECONDS, SpeedEstimate
from diarization.service.locations import ObjectRef
from diarization.service.model import Invocation, ObjectRequest
from diarization.service.outcomes import Failed, Routed, Skipped, Succeeded
from diarization.service.routing import Routing
from diarization.service.sync import DiarizeSync, SyncBudget, SyncRequest
from infra.media import encode_as, flac_declaring, mp3_bytes, speech_like
from support.fakes import MemoryJobs, MemoryStore
from support.service import BUCKET, Service, make_service, notification, request


def test_an_object_becomes_a_result_an_event_and_a_finished_job(
    service: Service, encoded_samples: dict[str, Path], tmp_path: Path
) -> None:
    service.store.put(BUCKET, "audio/uploads/job1/talk.flac", encoded_samples["flac"].read_bytes())
    service.jobs.create("job1", hints={"num_speakers": 2})

    outcome = service.diarize_object(request("audio/uploads/job1/talk.flac"), Invocation())

    assert isinstance(outcome, Succeeded) and outcome.job_id == "job1"
    assert outcome.output == {
        "json": f"s3://{BUCKET}/results/uploads/job1/talk.flac.json",
        "rttm": f"s3://{BUCKET}/results/uploads/job1/talk.flac.rttm",
    }
    assert service.store.keys(BUCKET, "results/") == [
        "results/uploads/job1/talk.flac.json",
        "results/uploads/job1/talk.flac.rttm",
    ]
    body = outcome.to_dict()
    assert body["status"] == "succeeded" and body["job_id"] == "job1" and body["speaker_count"] == 2
    assert service.notifier.published == [{k: v for k, v in body.items() if k != "job_id"}]
    assert service.jobs.jobs["job1"]["status"] == "succeeded"
    assert list(tmp_path.iterdir()) == []  # scratch removed


def test_a_bad_file_replaces_an_older_result_with_an_error_object(service: Service, encoded_samples) -> None:
    service.store.put(BUCKET, "audio/a.wav", encoded_samples["wav"].read_bytes())
    assert isinstance(service.diarize_object(request("audio/a.wav"), Invocation()), Succeeded)
    service.store.put(BUCKET, "audio/a.wav", b"not audio at all" * 10)

    outcome = service.diarize_object(request("audio/a.wav"), Invocation(request_id="r-1"))

    assert isinstance(outcome, Failed) and outcome.error["location"] == f"s3://{BUCKET}/results/a.wav.error.json"
    assert service.store.keys(BUCKET, "results/") == ["results/a.wav.error.json"]
    error_object = service.store.get_json(BUCKET, "results/a.wav.error.json")
    assert error_object["request_id"] == "r-1" and error_object["error"]["code"] == outcome.error["code"]
    assert service.telemetry.failures == [outcome.error["code"]]


def test_an_older_version_never_writes_over_a_newer_one(diarizer: Diarizer, tmp_path: Path, encoded_samples) -> None:
    service = make_service(diarizer, tmp_path, versioned=True)
    old = service.store.put(BUCKET, "audio/v.wav", encoded_samples["wav"].read_bytes())
    new = service.store.put(BUCKET, "audio/v.wav", b"not audio at all" * 10)
    newer = service.diarize_object(request("audio/v.wav", sequencer="02"), Invocation())
    assert isinstance(newer, Failed) and newer.version_id == new.version_id

    late = ObjectRequest(ObjectRef(BUCKET, "audio/v.wav", old.version_id), sequencer="01")
    outcome = service.diarize_object(late, Invocation())

    assert isinstance(outcome, Skipped) and outcome.reason.startswith("superseded")
    assert service.store.keys(BUCKET, "results/") == ["results/v.wav.error.json"]
    assert service.store.get_json(BUCKET, "results/v.wav.error.json")["input"]["version_id"] == new.version_id


def test_a_multipart_upload_completed_after_an_overwrite_is_the_newer_version(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    """S3 stamps a multipart object with the Last-Modified of the upload's start: the large v2, completed after the
    small overwrite v1 was processed, has the earlier Last-Modified and the later sequencer, and its result wins."""
    service = make_service(diarizer, tmp_path, versioned=True)
    small = service.store.put(BUCKET, "audio/m.wav", encoded_samples["wav"].read_bytes())
    assert isinstance(service.diarize_object(request("audio/m.wav", sequencer="0065A1"), Invocation()), Succeeded)
    large = service.store.put(BUCKET, "audio/m.wav", encoded_samples["flac"].read_bytes())
    large.last_modified = "000000000000"  # the upload started before the overwrite

    outcome = service.diarize_object(request("audio/m.wav", sequencer="0065A2"), Invocation())

    assert isinstance(outcome, Succeeded) and outcome.version_id == large.version_id != small.version_id
    assert service.store.keys(BUCKET, "results/") == ["results/m.wav.json", "results/m.wav.rttm"]
    assert service.store.get_json(BUCKET, "results/m.wav.json")["audio"]["original"]["codec"] == "flac"
    late = ObjectRequest(ObjectRef(BUCKET, "audio/m.wav", small.version_id), sequencer="0065A1")
    assert isinstance(service.diarize_object(late, Invocation()), Skipped)  # v1's event again: superseded


def test_given_up_work_ends_its_job_but_never_undoes_a_success(service: Service, encoded_samples) -> None:
    service.store.put(BUCKET, "audio/uploads/job3/a.wav", b"any bytes")
    service.jobs.create("job3")
    outcome = service.abandon(request("audio/uploads/job3/a.wav"), Invocation(), deliveries=3)
    assert isinstance(outcome, Failed) and outcome.error["code"] == "INTERNAL_ERROR"
    assert service.jobs.jobs["job3"]["status"] == "failed"
    assert service.store.keys(BUCKET, "results/") == ["results/uploads/job3/a.wav.error.json"]

    service.store.put(BUCKET, "audio/ok.wav", encoded_samples["wav"].read_bytes())
    done = service.diarize_object(request("audio/ok.wav"), Invocation())
    assert isinstance(done, Succeeded)
    late = service.abandon(request("audio/ok.wav"), Invocation(), deliveries=3)
    assert late == replace(done, timings=late.timings)  # the success, read back from its result
    assert service.store.keys(BUCKET, "results/ok") == ["results/ok.wav.json", "results/ok.wav.rttm"]


def test_an_upload_for_a_job_that_has_ended_is_not_diarized_again(service: Service, tmp_path: Path) -> None:
    """A job runs once: its event delivered again is skipped; a new file through its upload form gets an error
    object (not a run), so the outputs describe the object as it is now; the job keeps its outcome."""
    service.jobs.create("job5")
    short = encode_as(speech_like(4.0), 16_000, tmp_path, "flac").read_bytes()
    service.store.put(BUCKET, "audio/uploads/job5/a.flac", short)
    first = service.diarize_object(request("audio/uploads/job5/a.flac"), Invocation())
    assert isinstance(first, Succeeded) and service.jobs.jobs["job5"]["status"] == "succeeded"
    described = service.store.get_json(BUCKET, "results/uploads/job5/a.flac.json")

    duplicate = service.diarize_object(request("audio/uploads/job5/a.flac"), Invocation())  # at-least-once
    assert isinstance(duplicate, Skipped) and duplicate.job_id == "job5"
    assert duplicate.reason == "job job5 has already ended (succeeded); a new upload needs a new job (POST /jobs)"
    assert service.store.get_json(BUCKET, "results/uploads/job5/a.flac.json") == described

    service.store.put(BUCKET, "audio/uploads/job5/a.flac", short + b"\0")  # the upload form, used again
    again = service.diarize_object(request("audio/uploads/job5/a.flac"), Invocation())

    assert isinstance(again, Failed) and again.error["code"] == "UPLOAD_ALREADY_USED" and again.job_id is None
    assert again.error["details"] == {"job_id": "job5", "job_status": "succeeded"}
    assert service.store.keys(BUCKET, "results/uploads/job5/") == ["results/uploads/job5/a.flac.error.json"]
    assert ("WorkForEndedJobs", 1) in service.telemetry.metrics
    assert (
        service.jobs.jobs["job5"]["status"] == "succeeded" and service.jobs.jobs["job5"]["outcome"] == first.to_dict()
    )


def test_a_redelivery_for_a_running_job_still_runs(service: Service, tmp_path: Path) -> None:
    """The first delivery marked the job running and then died (timeout, crash): the redelivery finishes it."""
    service.jobs.create("job6")
    short = encode_as(speech_like(4.0), 16_000, tmp_path, "flac").read_bytes()
    put = service.store.put(BUCKET, "audio/uploads/job6/a.flac", short)
    assert service.jobs.mark_running("job6", ObjectRef(BUCKET, "audio/uploads/job6/a.flac", etag=put.etag))
    outcome = service.diarize_object(request("audio/uploads/job6/a.flac"), Invocation())
    assert isinstance(outcome, Succeeded) and service.jobs.jobs["job6"]["status"] == "succeeded"


class CountsReads:
    """A job store that counts its reads."""

    def __init__(self, jobs: MemoryJobs) -> None:
        self.jobs = jobs
        self.reads: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.jobs, name)

    def get(self, job_id: str) -> dict[str, object] | None:
        self.reads.append(job_id)
        return self.jobs.get(job_id)


def test_a_job_is_read_once_per_object(service: Service, encoded_samples) -> None:
    """Its hints, formats and voiceprints all come from one read of its record."""
    service.store.put(BUCKET, "audio/uploads/job7/a.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create("job7", hints={"num_speakers": 2}, formats=["json", "srt"])
    counting = CountsReads(service.jobs)
    service.diarize_object.jobs = counting  # type: ignore[assignment]

    outcome = service.diarize_object(request("audio/uploads/job7/a.wav"), Invocation())

    assert isinstance(outcome, Succeeded) and outcome.speaker_count == 2 and sorted(outcome.output) == ["json", "srt"]
    assert counting.reads == ["job7"]


class DiesAfterPublishing:
    """The job store of a process that dies right after the result is written, before its job is ended."""

    def __init__(self, jobs: MemoryJobs) -> None:
        self.jobs = jobs

    def __getattr__(self, name: str) -> object:
        return getattr(self.jobs, name)

    def finish(self, job_id: str, outcome: dict[str, object]) -> bool:
        raise SystemExit("killed")


def test_work_that_died_after_writing_its_result_ends_its_job_succeeded(service: Service, encoded_samples) -> None:
    """After the retries the message is dead-lettered: the job ends with the written result, not a failure."""
    service.store.put(BUCKET, "audio/uploads/job4/a.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create("job4")
    service.diarize_object.jobs = DiesAfterPublishing(service.jobs)  # type: ignore[assignment]
    with pytest.raises(SystemExit):
        service.diarize_object(request("audio/uploads/job4/a.wav"), Invocation())
    assert service.jobs.jobs["job4"]["status"] == "running"
    written = service.store.get_json(BUCKET, "results/uploads/job4/a.wav.json")

    outcome = service.abandon(request("audio/uploads/job4/a.wav"), Invocation(), deliveries=3)

    assert isinstance(outcome, Succeeded) and outcome.job_id == "job4"
    assert outcome.speaker_count == written["speaker_count"] and outcome.timings == written["timings"]
    job = service.jobs.jobs["job4"]
    assert job["status"] == "succeeded" and job["outcome"]["output"]["json"].endswith("a.wav.json")
    assert service.store.keys(BUCKET, "results/uploads/job4/") == [
        "results/uploads/job4/a.wav.json",
        "results/uploads/job4/a.wav.rttm",
    ]
    assert len(service.notifier.published) == 1 and service.telemetry.failures == []


def test_a_superseded_job_fails_with_input_changed_naming_the_newer_outputs(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    """The job's version was replaced before its outputs were written: its job says so and where to look."""
    service = make_service(diarizer, tmp_path, versioned=True)
    old = service.store.put(BUCKET, "audio/uploads/job5/a.wav", encoded_samples["wav"].read_bytes())
    new = service.store.put(BUCKET, "audio/uploads/job5/a.wav", encoded_samples["flac"].read_bytes())
    newer = service.diarize_object(request("audio/uploads/job5/a.wav", sequencer="02"), Invocation())
    assert isinstance(newer, Succeeded)
    before = {key: service.store.get_json(BUCKET, key) for key in ["results/uploads/job5/a.wav.json"]}
    service.jobs.create("job6")
    late = ObjectRequest(ObjectRef(BUCKET, "audio/uploads/job5/a.wav", old.version_id), job_id="job6", sequencer="01")

    outcome = service.diarize_object(late, Invocation())

    assert isinstance(outcome, Skipped) and outcome.reason.startswith("superseded") and outcome.error is not None
    job = service.jobs.jobs["job6"]
    assert job["status"] == "failed" and job["outcome"]["error"] == outcome.error
    error = outcome.error
    assert error["code"] == "INPUT_CHANGED"
    assert error["details"]["version_id"] == old.version_id and error["details"]["current_version_id"] == new.version_id
    assert error["details"]["result"] == f"s3://{BUCKET}/results/uploads/job5/a.wav.json"
    assert f"s3://{BUCKET}/results/uploads/job5/a.wav.json" in error["message"]
    assert {key: service.store.get_json(BUCKET, key) for key in before} == before
    assert service.store.keys(BUCKET, "results/uploads/job5/") == [
        "results/uploads/job5/a.wav.json",
        "results/uploads/job5/a.wav.rttm",
    ]


def test_outputs_are_never_inputs(service: Service) -> None:
    outcome = service.diarize_object(request("results/a.wav.json"), Invocation())
    assert isinstance(outcome, Skipped) and "output prefix" in outcome.reason
    assert outcome.to_dict() == {
        "status": "skipped",
        "reason": outcome.reason,
        "input": "s3://audio/results/a.wav.json",
    }


def test_too_little_time_left_is_an_error_object_not_a_timeout(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    service = make_service(diarizer, tmp_path, gpu=False)  # with a GPU endpoint, what does not fit is routed there
    service.store.put(BUCKET, "audio/late.wav", encoded_samples["wav"].read_bytes())
    outcome = service.diarize_object(request("audio/late.wav"), Invocation.from_remaining(10.0, "r-2"))
    assert isinstance(outcome, Failed) and outcome.error["code"] == "AUDIO_TOO_LONG_FOR_LAMBDA"


GIB = 2**30


def test_audio_whose_clustering_would_not_fit_is_refused_before_diarizing(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    """An out-of-memory kill leaves no error object: the estimate refuses the file first (a stand-in budget of 1 GiB
    with 1 GiB in use; the estimate itself is tested against pyannote's clustering in test_capacity.py)."""
    service = make_service(diarizer, tmp_path, memory=MemoryBudget(GIB, lambda: GIB), gpu=False)
    service.store.put(BUCKET, "audio/huge.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create("job3")

    outcome = service.diarize_object(request("audio/huge.wav", job_id="job3"), Invocation())

    assert isinstance(outcome, Failed) and outcome.error["code"] == "AUDIO_TOO_LONG_FOR_MEMORY"
    details = outcome.error["details"]
    assert details["limit_bytes"] == GIB and details["baseline_bytes"] == GIB and details["max_audio_seconds"] == 0
    assert service.store.keys(BUCKET, "results/") == ["results/huge.wav.error.json"]
    assert service.store.get_json(BUCKET, "results/huge.wav.error.json")["error"]["code"] == "AUDIO_TOO_LONG_FOR_MEMORY"
    assert service.jobs.jobs["job3"]["status"] == "failed"


def test_audio_whose_clustering_would_not_fit_goes_to_the_gpu(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    service = make_service(diarizer, tmp_path, memory=MemoryBudget(GIB, lambda: GIB))
    service.store.put(BUCKET, "audio/huge.wav", encoded_samples["wav"].read_bytes())
    outcome = service.diarize_object(request("audio/huge.wav"), Invocation())
    assert isinstance(outcome, Routed) and "would not fit in this function's memory" in outcome.reason
    assert service.store.keys(BUCKET, "results/") == []


def test_audio_that_fits_the_memory_budget_is_diarized_here(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    service = make_service(diarizer, tmp_path, memory=MemoryBudget(64 * GIB, lambda: GIB))
    service.store.put(BUCKET, "audio/fits.wav", encoded_samples["wav"].read_bytes())
    assert isinstance(service.diarize_object(request("audio/fits.wav"), Invocation()), Succeeded)


def test_synchronous_diarization_refuses_what_would_not_fit_in_memory(diarizer: Diarizer, encoded_samples) -> None:
    """The SageMaker server's path: the instance's memory, checked after decoding, before the pipeline runs."""
    sync = DiarizeSync(diarizer, None, memory=MemoryBudget(GIB, lambda: GIB))
    with pytest.raises(AudioTooLongForMemoryError) as caught:
        sync(SyncRequest(encoded_samples["wav"].read_bytes(), SpeakerHints()))
    assert caught.value.http_status == 413 and caught.value.details["limit_bytes"] == GIB


def test_long_audio_is_routed_and_its_job_finishes_on_completion(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    service = make_service(diarizer, tmp_path, gpu_above=10.0)
    service.store.put(BUCKET, "audio/long.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create("job2")

    routed = service.diarize_object(request("audio/long.wav", job_id="job2"), Invocation())

    assert isinstance(routed, Routed) and routed.inference_id.startswith("job2-")
    ((submitted_ref, _, inference_id),) = service.router.submitted
    assert submitted_ref.key == "audio/long.wav" and inference_id == routed.inference_id
    assert ("RoutedToGpu", 1) in service.telemetry.metrics
    assert service.jobs.jobs["job2"]["status"] == "running"  # until the GPU reports back
    assert service.store.keys(BUCKET, "results/") == []
    gpu_result = diarizer.diarize(encoded_samples["wav"], SpeakerHints(), "s3://audio/audio/long.wav").to_dict()
    service.store.put_json("gpu", f"out/{inference_id}.out", gpu_result)

    done = service.complete(
        {
            "invocationStatus": "Completed",
            "inferenceId": inference_id,
            "requestParameters": {"inputLocation": "s3://audio/audio/long.wav"},
            "responseParameters": {"outputLocation": f"s3://gpu/out/{inference_id}.out"},
        },
        Invocation(),
    )

    assert isinstance(done, Succeeded) and done.inference_id == inference_id
    assert service.store.keys(BUCKET, "results/") == ["results/long.wav.json", "results/long.wav.rttm"]
    assert service.jobs.jobs["job2"]["status"] == "succeeded"


def test_a_routed_run_is_named_on_completion_and_an_unreadable_centroid_fails_it(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    """The matching of routed work on its own (the end-to-end path is in test_gpu_routing): the centroids are asked
    for, used and not published; one that is not a number makes the output unreadable (GPU_INFERENCE_FAILED)."""
    service = make_service(diarizer, tmp_path, gpu_above=10.0)
    audio, _ = decode_within_limits(diarizer.settings, encoded_samples["wav"])
    alice, _ = diarizer.enroll_decoded(audio, "alice", "alice.wav")
    names = {}
    for job_id in ("job7", "job8"):
        service.store.put(BUCKET, f"audio/{job_id}.wav", encoded_samples["wav"].read_bytes())
        service.jobs.create(job_id, voiceprints=json.dumps([alice.to_dict()]))
        routed = service.diarize_object(request(f"audio/{job_id}.wav", job_id=job_id), Invocation())
        assert isinstance(routed, Routed)
        names[job_id] = routed.inference_id
    assert service.router.embeddings_asked == [True, True]
    output = diarizer.diarize_decoded(audio, SpeakerHints(), "gpu", include_embeddings=True).to_dict()
    broken = {**output, "speaker_embeddings": {label: ["x"] for label in output["speaker_embeddings"]}}
    service.store.put_json("gpu", f"out/{names['job7']}.out", output)
    service.store.put_json("gpu", f"out/{names['job8']}.out", broken)

    def complete(job_id: str) -> Succeeded | Failed | Skipped:
        return service.complete(
            {
                "invocationStatus": "Completed",
                "inferenceId": names[job_id],
                "requestParameters": {"inputLocation": f"s3://audio/audio/{job_id}.wav"},
                "responseParameters": {"outputLocation": f"s3://gpu/out/{names[job_id]}.out"},
            },
            Invocation(),
        )

    assert isinstance(complete("job7"), Succeeded)
    result = service.store.get_json(BUCKET, "results/job7.wav.json")
    named = {speaker["id"]: speaker["name"] for speaker in result["speakers"]}
    assert named[alice.enrollment["speaker"]] == "alice"  # the same audio: its dominant speaker
    assert result["identification"]["voiceprints"] == ["alice"] and "speaker_embeddings" not in result
    failed = complete("job8")
    assert isinstance(failed, Failed) and failed.error["code"] == "GPU_INFERENCE_FAILED"
    assert "speaker_embeddings" in failed.error["message"]
    assert service.jobs.jobs["job8"]["status"] == "failed"


def test_synchronous_diarization_keeps_to_its_budget(diarizer: Diarizer, encoded_samples, tmp_path: Path) -> None:
    store = MemoryStore()
    store.put(BUCKET, "audio/s.ogg", encoded_samples["ogg"].read_bytes())
    sync = DiarizeSync(
        diarizer, store, tmp_path, SyncBudget(seconds=25.0, max_object_bytes=1 << 25), SpeedEstimate(0.1)
    )

    result = sync(SyncRequest(ObjectRef(BUCKET, "audio/s.ogg"), SpeakerHints(), "s3://audio/audio/s.ogg"))
    assert result.input_uri == "s3://audio/audio/s.ogg" and result.audio.duration_seconds == pytest.approx(30, abs=0.1)

    slow = DiarizeSync(
        diarizer, store, tmp_path, SyncBudget(seconds=25.0, max_object_bytes=1 << 25), SpeedEstimate(1.0)
    )
    with pytest.raises(TooLongForSyncError):
        slow(SyncRequest(encoded_samples["wav"].read_bytes(), SpeakerHints()))


def test_the_sync_budget_is_checked_from_the_header_before_decoding(diarizer: Diarizer, tmp_path: Path) -> None:
    """2 s of real FLAC whose header declares 4 h. Decoding it would end in INVALID_AUDIO (truncated), so a
    TOO_LONG_FOR_SYNC naming the declared duration can only come from the header, before any decoding."""
    lying = flac_declaring(2.0, 4 * 3600)
    store = MemoryStore()
    store.put(BUCKET, "audio/4h.flac", lying)
    sync = DiarizeSync(
        diarizer, store, tmp_path, SyncBudget(seconds=25.0, max_object_bytes=1 << 25), SpeedEstimate(0.1)
    )

    for source in (lying, ObjectRef(BUCKET, "audio/4h.flac")):
        with pytest.raises(TooLongForSyncError) as caught:
            sync(SyncRequest(source, SpeakerHints()))
        assert caught.value.details == {"declared_seconds": 14400.0, "estimated_seconds": 1442.0}
        assert "declares 14400 s" in caught.value.message and "POST /jobs" in caught.value.message

    without_budget = DiarizeSync(diarizer, store)
    with pytest.raises(InvalidAudioError, match="truncated"):
        without_budget(SyncRequest(lying, SpeakerHints()))


def test_the_sync_budget_is_checked_again_after_decoding_when_the_header_understates(
    diarizer: Diarizer, tmp_path: Path
) -> None:
    """3 s at 160 kb/s then 12 s at 8 kb/s: FFmpeg estimates ~3.7 s from the first bit rate; 15 s decode, but the
    budget (10 s at real time, less the fixed overhead) stops the decoding at the longest audio it can take."""
    glued = mp3_bytes(speech_like(3.0), 160_000) + mp3_bytes(speech_like(12.0, seed=1), 8_000)
    sync = DiarizeSync(diarizer, None, tmp_path, SyncBudget(seconds=10.0, max_object_bytes=1 << 25), SpeedEstimate(1.0))
    with pytest.raises(TooLongForSyncError) as caught:
        sync(SyncRequest(glued, SpeakerHints()))
    longest = 10.0 - FIXED_OVERHEAD_SECONDS
    assert caught.value.details == {"decoding_stopped_at_seconds": pytest.approx(longest)}
    assert "decoding stopped there" in caught.value.message and "POST /jobs" in caught.value.message


def test_a_sync_request_stops_decoding_at_its_budget_not_at_max_audio_seconds(diarizer: Diarizer) -> None:
    """A header that understates (~4 s declared, 60 s inside): the decoder stops at the budget's longest audio, not
    at MAX_AUDIO_SECONDS; a faster estimate takes the whole file."""
    glued = mp3_bytes(speech_like(3.0), 160_000) + mp3_bytes(speech_like(57.0, seed=2), 8_000)
    budget = SyncBudget(seconds=10.0, max_object_bytes=1 << 25)
    with pytest.raises(TooLongForSyncError) as caught:
        DiarizeSync(diarizer, None, None, budget, SpeedEstimate(1.0))(SyncRequest(glued, SpeakerHints()))
    assert caught.value.details["decoding_stopped_at_seconds"] == pytest.approx(10.0 - FIXED_OVERHEAD_SECONDS)
    whole = DiarizeSync(diarizer, None, None, budget, SpeedEstimate(0.1))(SyncRequest(glued, SpeakerHints()))
    assert whole.audio.duration_seconds == pytest.approx(60.0, abs=0.5)


def test_the_service_and_the_server_import_no_lambda_host() -> None:
    """The use cases import no AWS library; the SageMaker server reaches S3 through `aws_ports` only."""
    code = (
        "import sys; import diarization.service.diarize_object, diarization.service.completion, "
        "diarization.service.sync; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('boto3', 'botocore', 'aws_lambda_powertools') or m.startswith('diarization.aws')); "
        "import diarization.sagemaker.server; bad += [m for m in sys.modules if m.startswith('diarization.aws.')]; "
        "print(bad)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root / "function", capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def routed_job(
    diarizer: Diarizer, tmp_path: Path, encoded_samples: dict[str, Path], job_id: str
) -> tuple[Service, str]:
    """`audio/long.wav` routed to the GPU for `job_id`, and the inference's id; the fake router's output location is
    s3://gpu/out/{id}.out."""
    service = make_service(diarizer, tmp_path, gpu_above=10.0)
    service.store.put(BUCKET, "audio/long.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create(job_id, input=f"s3://{BUCKET}/audio/long.wav")
    routed = service.diarize_object(request("audio/long.wav", job_id=job_id), Invocation())
    assert isinstance(routed, Routed)
    return service, routed.inference_id


@pytest.mark.parametrize(
    ("inference_id", "input_uri", "output", "reason"),
    [
        ("nobody", "s3://audio/audio/long.wav", "s3://gpu/out/ROUTED.out", "was not routed"),
        ("job4", "s3://audio/audio/long.wav", "s3://gpu/out/ROUTED.out", "was not routed"),  # the job's, not the run's
        ("x" * 5000, "s3://audio/audio/long.wav", "s3://gpu/out/ROUTED.out", "was not routed"),
        ("ROUTED", "s3://other/audio/long.wav", "s3://gpu/out/ROUTED.out", "is not the input routed"),
        ("ROUTED", "s3://audio/elsewhere/long.wav", "s3://gpu/out/ROUTED.out", "is not the input routed"),
        ("ROUTED", "s3://audio/audio/long.wav", "s3://gpu/out/forged.out", "outputLocation"),
        ("ROUTED", "not a uri", "s3://gpu/out/ROUTED.out", "not an s3:// URI"),
        ("ROUTED", "s3://audio/audio/long.wav", "s3://gpu/out/forged.out", "failureLocation"),
    ],
)
def test_a_completion_that_does_not_match_its_routing_changes_nothing(
    diarizer: Diarizer, tmp_path: Path, encoded_samples, inference_id: str, input_uri: str, output: str, reason: str
) -> None:
    """`ROUTED` stands for the routed inference's id."""
    service, routed = routed_job(diarizer, tmp_path, encoded_samples, "job4")
    service.store.put_json("gpu", "out/forged.out", {"schema_version": "1.0", "segments": []})
    before = sorted(service.store.objects)
    status = "Failed" if reason == "failureLocation" else "Completed"
    inference_id, output = inference_id.replace("ROUTED", routed), output.replace("ROUTED", routed)

    outcome = service.complete(notification(inference_id, input_uri, output, status), Invocation())

    assert (
        isinstance(outcome, Skipped) and outcome.reason.startswith("untrusted completion") and reason in outcome.reason
    )
    assert sorted(service.store.objects) == before  # nothing written or deleted
    assert service.jobs.jobs["job4"]["status"] == "running"
    assert ("UntrustedCompletions", 1) in service.telemetry.metrics and service.notifier.published == []


def test_the_routed_input_is_checked_against_the_input_prefix(diarizer: Diarizer, tmp_path: Path) -> None:
    """A record is no licence to write outside the configured inputs (here: one made under the output prefix)."""
    service = make_service(diarizer, tmp_path)
    service.jobs.record_routing(Routing("x", ObjectRef(BUCKET, "results/x.wav"), "s3://gpu/out/x.out", None))
    outcome = service.complete(notification("x", "s3://audio/results/x.wav", "s3://gpu/out/x.out"), Invocation())
    assert isinstance(outcome, Skipped) and "output prefix" in outcome.reason
    assert service.store.keys(BUCKET) == []


@pytest.mark.parametrize("output", [None, "s3://gpu/out/ROUTED.out"])
def test_a_success_without_its_output_fails_the_job_with_an_error_object(
    diarizer: Diarizer, tmp_path: Path, encoded_samples, output: str | None
) -> None:
    """No outputLocation, or nothing there: GPU_INFERENCE_FAILED where the user looks, never an exception."""
    service, routed = routed_job(diarizer, tmp_path, encoded_samples, "job5")
    output = output and output.replace("ROUTED", routed)

    outcome = service.complete(notification(routed, "s3://audio/audio/long.wav", output), Invocation())

    assert isinstance(outcome, Failed) and outcome.error["code"] == "GPU_INFERENCE_FAILED"
    assert service.store.keys(BUCKET, "results/") == ["results/long.wav.error.json"]
    assert service.jobs.jobs["job5"]["status"] == "failed"
    assert service.jobs.jobs["job5"]["outcome"]["error"]["code"] == "GPU_INFERENCE_FAILED"


def test_the_sweep_ends_a_routed_job_whose_gpu_never_answers(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    service, routed = routed_job(diarizer, tmp_path, encoded_samples, "job6")
    routing = service.jobs.routing(routed)
    assert routing is not None and routing.deadline is not None
    assert service.overdue(routing.deadline - 1, Invocation()) == []  # not yet

    ended = service.overdue(routing.deadline + 1, Invocation(request_id="sweep"))

    assert [outcome.status for outcome in ended] == ["failed", "failed"]  # the inference, and its job
    job = service.jobs.jobs["job6"]
    assert job["status"] == "failed" and job["outcome"]["error"]["code"] == "JOB_DEADLINE_EXCEEDED"
    body = service.store.get_json(BUCKET, "results/long.wav.error.json")
    assert body["error"]["code"] == "JOB_DEADLINE_EXCEEDED" and body["error"]["details"]["where"] == "gpu"
    assert service.overdue(routing.deadline + 1, Invocation()) == []  # ended once
    late = service.complete(notification(routed, "s3://audio/audio/long.wav", None, "Failed"), Invocation())
    assert isinstance(late, Failed) and service.jobs.jobs["job6"]["outcome"]["error"]["code"] == "JOB_DEADLINE_EXCEEDED"


def test_the_sweep_ends_an_overdue_lambda_job_with_its_written_result_and_leaves_ended_jobs(
    service: Service, encoded_samples
) -> None:
    """The run wrote its result, then died before ending the job: the job ends succeeded with that result, as the
    dead-letter consumer would end it; nothing is written."""
    service.store.put(BUCKET, "audio/done.wav", encoded_samples["wav"].read_bytes())
    assert isinstance(service.diarize_object(request("audio/done.wav"), Invocation()), Succeeded)
    service.jobs.create("job7", input=f"s3://{BUCKET}/audio/done.wav")
    service.jobs.create("job8", input=f"s3://{BUCKET}/audio/done.wav")
    done = ObjectRef(BUCKET, "audio/done.wav")
    assert service.jobs.mark_running("job7", done) and service.jobs.mark_running("job8", done)
    assert service.jobs.finish("job8", {"status": "succeeded"})
    deadline = service.jobs.jobs["job7"]["deadline"]

    (ended,) = service.overdue(deadline + 1, Invocation())

    assert isinstance(ended, Succeeded) and ended.job_id == "job7"
    assert ended.output["json"] == f"s3://{BUCKET}/results/done.wav.json"
    assert service.jobs.jobs["job7"]["status"] == "succeeded"
    assert service.store.keys(BUCKET, "results/") == ["results/done.wav.json", "results/done.wav.rttm"]
    assert service.jobs.jobs["job8"]["status"] == "succeeded" and service.jobs.jobs["job8"]["outcome"] == {
        "status": "succeeded"
    }


def test_the_sweep_ends_a_job_without_a_valid_input_without_writing(service: Service) -> None:
    service.jobs.create("job9", input="made by hand")
    assert service.jobs.mark_running("job9", ObjectRef(BUCKET, "audio/gone.wav"))

    (ended,) = service.overdue(service.jobs.jobs["job9"]["deadline"] + 1, Invocation())

    assert isinstance(ended, Failed) and ended.error["code"] == "JOB_DEADLINE_EXCEEDED"
    assert service.jobs.jobs["job9"]["status"] == "failed" and service.store.objects == {}


def test_the_idempotency_key_is_the_run_identity_job_owner_and_voiceprints_included() -> None:
    """Runs that differ in their job, owner or voiceprints (or hints, formats, version) are different runs: with
    one key, a second caller's job replayed the first one's stored outcome (its names, or none of its own)."""
    import jmespath

    from diarization.aws.app import IDEMPOTENCY_KEY
    from diarization.core.voiceprints import EmbeddingModel, Voiceprint
    from diarization.service.diarize_object import PinnedRun
    from diarization.service.ordering import Order

    alice = Voiceprint("alice", (0.6, 0.8), EmbeddingModel("m", "r1", 2), "2026-01-01T00:00:00Z", {})
    base = PinnedRun(ObjectRef(BUCKET, "audio/a.wav", "v1", "e1"), 10, SpeakerHints(), None, Order("t|", "v1"))
    runs = [
        base,
        replace(base, job_id="a" * 32, owner="123456789012:AROAALICE"),
        replace(base, job_id="b" * 32, owner="123456789012:AROAALICE"),
        replace(base, job_id="b" * 32, owner="123456789012:AIDABOB"),
        replace(base, job_id="b" * 32, owner="123456789012:AIDABOB", voiceprints=(alice,)),
        replace(base, voiceprints=(replace(alice, embedding=(0.8, 0.6)),)),  # re-enrolled: another answer
        replace(base, voiceprints=(alice,)),
        replace(base, hints=SpeakerHints(num_speakers=2)),
        replace(base, formats=("srt",)),
        replace(base, ref=ObjectRef(BUCKET, "audio/a.wav", "v2", "e2")),
    ]
    keys = [json.dumps(jmespath.search(IDEMPOTENCY_KEY, run.to_dict()), sort_keys=True) for run in runs]
    assert len(set(keys)) == len(runs)
    assert all(PinnedRun.from_dict(run.to_dict()) == run for run in runs)
    delivered_again = replace(base, size=10, order=Order("t|0065", "v1"))  # the same run, by another event
    assert jmespath.search(IDEMPOTENCY_KEY, delivered_again.to_dict()) == jmespath.search(
        IDEMPOTENCY_KEY, base.to_dict()
    )
