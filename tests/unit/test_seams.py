"""Where two paths meet on one key or one job, with in-memory ports: a GPU completion against a Lambda run of a newer
version, and a second upload against a job that is already running.

Each scenario ends with the invariant of tests/integration/test_faults.py (``support.service.assert_invariant``):
every input has exactly one of {result, error object}, describing its current version, and every job has ended.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from diarization.core.engine import Diarizer
from diarization.core.hints import SpeakerHints
from diarization.fanout.plan import AUDIO_OBJECT
from diarization.service.completion import MAX_INFERENCE_ID
from diarization.service.diarize_object import PinnedRun, inference_id_for
from diarization.service.fanout import work_key
from diarization.service.fanout_steps import EXECUTION_NAME
from diarization.service.locations import ObjectRef
from diarization.service.model import Invocation
from diarization.service.ordering import Order, version_of
from diarization.service.outcomes import Failed, Routed, Skipped, Succeeded
from infra.media import encode_as, speech_like
from support.service import BUCKET, WORK, Service, assert_invariant, make_service, notification, request


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
@pytest.mark.parametrize("status", ["Completed", "Failed"])
def test_a_late_gpu_report_never_replaces_a_newer_versions_result(
    diarizer: Diarizer, tmp_path: Path, encoded_samples: dict[str, Path], versioned: bool, status: str
) -> None:
    """v1 (30 s) is routed to the GPU, which reads it; a short v2 replaces the key and is diarized here; then v1's
    report arrives. It is about v1, which is no longer current: skipped, v2's result stays, v1's job ends failed with
    INPUT_CHANGED naming v2's outputs (never succeeded with v2's result)."""
    service = make_service(diarizer, tmp_path, versioned=versioned, gpu_above=10.0)
    key, long, short = "audio/talk.wav", encoded_samples["wav"], encode_as(speech_like(4.0), 16_000, tmp_path, "flac")
    service.store.put(BUCKET, key, long.read_bytes())
    service.jobs.create("job1", input=f"s3://{BUCKET}/{key}")
    routed = service.diarize_object(request(key, job_id="job1"), Invocation())
    assert isinstance(routed, Routed)
    gpu_output = diarizer.diarize(long, SpeakerHints(), f"s3://{BUCKET}/{key}").to_dict()  # what the GPU read: v1
    service.store.put_json("gpu", f"out/{routed.inference_id}.out", gpu_output)
    service.store.put(BUCKET, key, short.read_bytes())
    assert isinstance(service.diarize_object(request(key), Invocation()), Succeeded)  # v2, here
    output = routed.output_location if status == "Completed" else None

    late = service.complete(notification(routed.inference_id, f"s3://{BUCKET}/{key}", output, status), Invocation())

    assert isinstance(late, Skipped) and late.reason.startswith("superseded"), late
    result = service.store.get_json(BUCKET, "results/talk.wav.json")
    assert result["input"]["size_bytes"] == len(short.read_bytes())
    assert result["audio"]["duration_seconds"] == pytest.approx(4.0, abs=0.1)
    job = service.jobs.jobs["job1"]
    assert job["status"] == "failed" and job["outcome"]["error"]["code"] == "INPUT_CHANGED"
    assert job["outcome"]["error"]["details"]["result"] == f"s3://{BUCKET}/results/talk.wav.json"
    assert_invariant(service)


FIRST = "audio/uploads/job1/a.wav"


def start_job(service: Service, key: str, audio: Path) -> Routed:
    """Job `job1`'s upload `key`, routed (to the GPU, or fanned out)."""
    service.jobs.create("job1", upload=True)
    service.store.put(BUCKET, key, audio.read_bytes())
    routed = service.diarize_object(request(key), Invocation())
    assert isinstance(routed, Routed)
    return routed


def report(service: Service, diarizer: Diarizer, routed: Routed, audio: Path) -> Succeeded | Failed | Skipped:
    """The routed run's success: the GPU's (or the reduce's) result of `audio` at its output location, reported."""
    output = diarizer.diarize(audio, SpeakerHints(), routed.input).to_dict()
    bucket, _, key = str(routed.output_location).removeprefix("s3://").partition("/")
    service.store.put_json(bucket, key, output)
    return service.complete(notification(routed.inference_id, routed.input, routed.output_location), Invocation())


def staged_run(service: Service, name: str) -> tuple[object, bytes | None]:
    """A run's routing record and, for a fan-out, its staged samples."""
    staged = service.store.get_bytes(WORK, work_key(name, AUDIO_OBJECT)) if service.fanout.started else None
    return service.jobs.routing(name), staged


@pytest.mark.parametrize("route", ["gpu", "fanout"])
@pytest.mark.parametrize("second", ["another-name", "another-version"])
def test_a_second_upload_to_a_running_job_is_refused_and_the_job_keeps_its_run(
    diarizer: Diarizer, tmp_path: Path, encoded_samples: dict[str, Path], route: str, second: str
) -> None:
    """A job's first upload (30 s) is on the GPU or fanned out; a second file lands in the job's upload folder while
    it runs: another name, or a new version of the same name. It is not diarized: it gets a JOB_ALREADY_STARTED
    error object, and the first run's routing, name and staged audio stay as they were (before, the second run took
    the same name: it rewrote the routing, so the first report was refused as untrusted or published as the second
    file, and re-staged the fan-out's audio under a running execution). Then the first run reports: its result
    (another name), or skipped as superseded by the refused newer version, whose error object stays."""
    fanout = "always" if route == "fanout" else None
    service = make_service(diarizer, tmp_path, versioned=True, gpu_above=10.0, gpu=route == "gpu", fanout=fanout)
    routed = start_job(service, FIRST, encoded_samples["wav"])
    before = staged_run(service, routed.inference_id)
    second_key = "audio/uploads/job1/b.flac" if second == "another-name" else FIRST
    newer = encode_as(speech_like(36.0, seed=3), 16_000, tmp_path, "flac").read_bytes()
    put = service.store.put(BUCKET, second_key, newer)

    refused = service.diarize_object(request(second_key), Invocation())

    assert isinstance(refused, Failed) and refused.error["code"] == "JOB_ALREADY_STARTED", refused
    assert refused.version_id == put.version_id and refused.job_id is None
    assert refused.error["details"] == {
        "job_id": "job1",
        "run_input": f"s3://{BUCKET}/{FIRST}",
        "run_version": routed.version_id,
    }
    assert len(service.router.submitted) + len(service.fanout.started) == 1  # the first run only
    assert staged_run(service, routed.inference_id) == before
    assert service.jobs.jobs["job1"]["status"] == "running"

    reported = report(service, diarizer, routed, encoded_samples["wav"])

    job = service.jobs.jobs["job1"]
    if second == "another-name":
        assert isinstance(reported, Succeeded) and job["status"] == "succeeded"
        assert service.store.get_json(BUCKET, "results/uploads/job1/a.wav.json")["input"]["size_bytes"] == len(
            encoded_samples["wav"].read_bytes()
        )
    else:
        assert isinstance(reported, Skipped) and reported.reason.startswith("superseded")
        assert job["status"] == "failed" and job["outcome"]["error"]["code"] == "INPUT_CHANGED"
    error_object = service.store.get_json(BUCKET, f"results/{second_key.removeprefix('audio/')}.error.json")
    assert error_object["error"]["code"] == "JOB_ALREADY_STARTED"
    assert_invariant(service)


def test_every_run_name_carries_its_version_and_fits_the_services_limits() -> None:
    """A GPU inference id, a fan-out execution's name and its work prefix: one per input version, with a job or
    without, within SageMaker's 64 characters and Step Functions' execution names."""
    job_id = "f" * 32
    ref = ObjectRef(BUCKET, f"audio/uploads/{job_id}/a.wav", "v1", "e1")
    versions = (ref, replace(ref, version_id="v2"), replace(ref, version_id=None), replace(ref, etag="e2"))
    names = [
        inference_id_for(PinnedRun(version, 1, SpeakerHints(), job, Order("", version_of(version))))
        for version in versions
        for job in (job_id, None)
    ]
    assert len(set(names)) == len(names) == 8
    assert all(len(name) <= MAX_INFERENCE_ID and EXECUTION_NAME.match(name) for name in names), names
    assert names[0].startswith(f"{job_id}-")  # an operator finds the job by it


def test_a_dead_lettered_second_upload_leaves_the_job_to_its_run(
    diarizer: Diarizer, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """The dead-letter consumer gives up on a second file in a running job's folder: that file gets its error object,
    and the job still ends with its own run's outcome (before, it ended failed with the other file's error)."""
    service = make_service(diarizer, tmp_path, versioned=True, gpu_above=10.0)
    routed = start_job(service, FIRST, encoded_samples["wav"])
    second_key = "audio/uploads/job1/b.flac"
    service.store.put(BUCKET, second_key, encode_as(speech_like(4.0), 16_000, tmp_path, "flac").read_bytes())

    given_up = service.abandon(request(second_key), Invocation(), deliveries=3)

    assert isinstance(given_up, Failed) and given_up.error["code"] == "INTERNAL_ERROR" and given_up.job_id is None
    assert service.jobs.jobs["job1"]["status"] == "running"
    assert isinstance(report(service, diarizer, routed, encoded_samples["wav"]), Succeeded)
    job = service.jobs.jobs["job1"]
    assert job["status"] == "succeeded" and job["outcome"]["input"] == f"s3://{BUCKET}/{FIRST}"
    assert_invariant(service)
