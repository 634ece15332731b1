"""The use cases against in-memory ports: real decoding and the tiny pipeline, no AWS of any kind."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from diarization.aws.settings import AwsSettings
from diarization.config import Settings
from diarization.engine import Diarizer
from diarization.errors import TooLongForSyncError
from diarization.hints import SpeakerHints
from diarization.service.abandon import AbandonObject
from diarization.service.completion import CompleteInference
from diarization.service.diarize_object import DiarizeObject, SpeedEstimate
from diarization.service.locations import Locations, ObjectRef
from diarization.service.model import Invocation, ObjectRequest
from diarization.service.outcomes import Failed, Routed, Skipped, Succeeded
from diarization.service.publishing import Publisher
from diarization.service.sync import DiarizeSync, SyncBudget, SyncRequest
from fakes import FakeRouter, MemoryJobs, MemoryNotifier, MemoryOrdering, MemoryStore, RecordingTelemetry

BUCKET = "audio"
log = logging.getLogger("tests.service")


@pytest.fixture(scope="module")
def diarizer(tiny_settings: Settings) -> Diarizer:
    return Diarizer.from_settings(tiny_settings)


@dataclass
class Service:
    store: MemoryStore
    jobs: MemoryJobs
    notifier: MemoryNotifier
    telemetry: RecordingTelemetry
    router: FakeRouter
    diarize_object: DiarizeObject
    complete: CompleteInference
    abandon: AbandonObject


def make_service(diarizer: Diarizer, workdir: Path, versioned: bool = False, gpu_above: float = 1e9) -> Service:
    store, jobs, notifier = MemoryStore(versioned=versioned), MemoryJobs(), MemoryNotifier()
    telemetry, router = RecordingTelemetry(), FakeRouter(gpu_above)
    locations = Locations(AwsSettings(input_bucket=BUCKET))
    publisher = Publisher(store, notifier, log, telemetry, MemoryOrdering())
    diarize_object = DiarizeObject(
        diarizer,
        locations,
        store,
        publisher,
        jobs,
        log,
        telemetry,
        deadline_margin_seconds=5.0,
        speed=SpeedEstimate(0.5),
        workdir=workdir,
        router=router,
    )
    complete = CompleteInference(locations, store, publisher, jobs, log, telemetry)
    abandon = AbandonObject(locations, store, publisher, jobs, log)
    return Service(store, jobs, notifier, telemetry, router, diarize_object, complete, abandon)


@pytest.fixture()
def service(diarizer: Diarizer, tmp_path: Path) -> Service:
    return make_service(diarizer, tmp_path)


def request(key: str, **fields: object) -> ObjectRequest:
    return ObjectRequest(ObjectRef(BUCKET, key), **fields)  # type: ignore[arg-type]


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


def test_too_little_time_left_is_an_error_object_not_a_timeout(service: Service, encoded_samples) -> None:
    service.store.put(BUCKET, "audio/late.wav", encoded_samples["wav"].read_bytes())
    outcome = service.diarize_object(request("audio/late.wav"), Invocation.from_remaining(10.0, "r-2"))
    assert isinstance(outcome, Failed) and outcome.error["code"] == "AUDIO_TOO_LONG_FOR_LAMBDA"


def test_long_audio_is_routed_and_its_job_finishes_on_completion(
    diarizer: Diarizer, tmp_path: Path, encoded_samples
) -> None:
    service = make_service(diarizer, tmp_path, gpu_above=10.0)
    service.store.put(BUCKET, "audio/long.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create("job2")

    routed = service.diarize_object(request("audio/long.wav", job_id="job2"), Invocation())

    assert isinstance(routed, Routed) and routed.inference_id == "job2"
    ((submitted_ref, _, inference_id),) = service.router.submitted
    assert submitted_ref.key == "audio/long.wav" and inference_id == "job2"
    assert ("RoutedToGpu", 1) in service.telemetry.metrics
    assert service.jobs.jobs["job2"]["status"] == "running"  # until the GPU reports back
    assert service.store.keys(BUCKET, "results/") == []
    gpu_result = diarizer.diarize(encoded_samples["wav"], SpeakerHints(), "s3://audio/audio/long.wav").to_dict()
    service.store.put_json("gpu", "out/job2.out", gpu_result)

    done = service.complete(
        {
            "invocationStatus": "Completed",
            "inferenceId": "job2",
            "requestParameters": {"inputLocation": "s3://audio/audio/long.wav"},
            "responseParameters": {"outputLocation": "s3://gpu/out/job2.out"},
        },
        Invocation(),
    )

    assert isinstance(done, Succeeded) and done.inference_id == "job2"
    assert service.store.keys(BUCKET, "results/") == ["results/long.wav.json", "results/long.wav.rttm"]
    assert service.jobs.jobs["job2"]["status"] == "succeeded"


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


def test_the_service_and_the_server_import_no_lambda_host() -> None:
    """The use cases import no AWS library; the SageMaker server reaches S3 through `aws_ports` only."""
    code = (
        "import sys; import diarization.service.diarize_object, diarization.service.completion, "
        "diarization.service.sync; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('boto3', 'botocore', 'aws_lambda_powertools') or m.startswith('diarization.aws')); "
        "import diarization.sagemaker.server; bad += [m for m in sys.modules if m.startswith('diarization.aws.')]; "
        "print(bad)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root / "function", capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
