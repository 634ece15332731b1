"""Job creation (the use case behind POST /jobs) against the in-memory ports: every way it refuses, and what it
records, queues and answers when it does not. The HTTP side (status codes, the body) is in test_api.py."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pytest

from diarization.aws.settings import AwsSettings
from diarization.core.hints import SpeakerHints
from diarization.core.voiceprints import EmbeddingModel, Voiceprint
from diarization.errors import (
    ConfigurationError,
    DiarizationError,
    InputNameReservedError,
    InputNotFoundError,
    InvalidParameterError,
    InvalidRequestError,
    VoiceprintsOnSharedInputError,
)
from diarization.service.deps import Shared
from diarization.service.jobs import CreateJob, JobRequest
from diarization.service.locations import Locations, ObjectRef
from diarization.service.publishing import Publisher
from support.fakes import MemoryJobQueue, MemoryJobs, MemoryStore, RecordingTelemetry

BUCKET = "in"
ALICE, BOB = "123456789012:AROAALICE", "123456789012:AIDABOB"
JOB_ID = "a" * 32
log = logging.getLogger("tests.jobs")


@dataclass
class Stack:
    store: MemoryStore
    jobs: MemoryJobs
    queue: MemoryJobQueue
    create: CreateJob


def make_stack(
    *, input_bucket: str | None = BUCKET, jobs: bool = True, queue: bool = True, formats: tuple[str, ...] = ("rttm",)
) -> Stack:
    store, memory_jobs, job_queue, telemetry = MemoryStore(), MemoryJobs(), MemoryJobQueue(), RecordingTelemetry()
    locations = Locations(AwsSettings(input_bucket=input_bucket))
    shared = Shared(
        locations, store, Publisher(store, None, log, telemetry), memory_jobs if jobs else None, log, telemetry
    )
    create = CreateJob(
        shared,
        job_queue if queue else None,
        formats=formats,
        url_expiry_seconds=900,
        max_upload_bytes=1000,
        new_id=lambda: JOB_ID,
    )
    return Stack(store, memory_jobs, job_queue, create)


@pytest.fixture()
def stack() -> Stack:
    return make_stack()


def refused(stack: Stack, request: JobRequest, error: type[DiarizationError], match: str) -> DiarizationError:
    """The request fails with `error`, and leaves nothing behind: no job, no message."""
    with pytest.raises(error, match=match) as raised:
        stack.create(request)
    assert type(raised.value) is error
    assert stack.jobs.jobs == {} and stack.queue.sent == []
    return raised.value


def test_a_job_for_an_existing_object_is_recorded_and_queued(stack: Stack) -> None:
    stack.store.put(BUCKET, "audio/talk.wav", b"RIFF")
    hints = SpeakerHints(num_speakers=2)

    job = stack.create(JobRequest(ALICE, hints, s3_uri=f"s3://{BUCKET}/audio/talk.wav"))

    assert job.job_id == JOB_ID and job.input == ObjectRef(BUCKET, "audio/talk.wav") and job.upload is None
    assert job.result == {
        "json": f"s3://{BUCKET}/results/talk.wav.json",
        "rttm": f"s3://{BUCKET}/results/talk.wav.rttm",
        "error": f"s3://{BUCKET}/results/talk.wav.error.json",
    }
    assert stack.queue.sent == [(JOB_ID, ObjectRef(BUCKET, "audio/talk.wav"), hints)]
    assert stack.jobs.jobs[JOB_ID] == {
        "job_id": JOB_ID,
        "status": "queued",
        "owner": ALICE,
        "input": f"s3://{BUCKET}/audio/talk.wav",
        "hints": hints.to_dict(),
        "formats": ["rttm"],
        "result": job.result,
        "upload": False,
    }


def test_an_upload_job_gets_a_form_and_nothing_is_queued(stack: Stack) -> None:
    job = stack.create(JobRequest(ALICE, upload=True, filename="call 1.m4a"))

    key = f"audio/uploads/{JOB_ID}/call 1.m4a"
    assert job.input == ObjectRef(BUCKET, key) and job.job_id == JOB_ID
    assert job.upload is not None and job.upload["fields"]["key"] == key
    assert {name: job.upload[name] for name in ("method", "expires_in", "max_bytes")} == {
        "method": "POST",
        "expires_in": 900,
        "max_bytes": 1000,
    }
    assert job.upload["fields"]["max_bytes"] == "1000"  # the store's form enforces the limit
    assert stack.queue.sent == []
    assert stack.jobs.jobs[JOB_ID]["upload"] is True and stack.jobs.jobs[JOB_ID]["owner"] == ALICE


def test_an_upload_job_needs_no_work_queue() -> None:
    stack = make_stack(queue=False)
    assert stack.create(JobRequest(ALICE, upload=True, filename="a.wav")).upload is not None


def test_formats_callback_and_voiceprints_are_kept_with_the_job(stack: Stack) -> None:
    voiceprint = Voiceprint("Alice", (0.6, 0.8), EmbeddingModel("m", "r1", 2), "2026-01-01T00:00:00Z", {})
    request = JobRequest(
        ALICE,
        upload=True,
        filename="a.wav",
        formats=("srt",),
        callback_url="https://hooks.example.com/done",
        voiceprints=(voiceprint,),
    )

    job = stack.create(request)

    assert sorted(job.result) == ["error", "json", "srt"] and job.callback_url == "https://hooks.example.com/done"
    record = stack.jobs.jobs[JOB_ID]
    assert record["formats"] == ["srt"] and record["callback_url"] == "https://hooks.example.com/done"
    assert [Voiceprint.from_dict(body) for body in json.loads(record["voiceprints"])] == [voiceprint]


def test_the_deployments_formats_apply_when_the_request_names_none() -> None:
    stack = make_stack(formats=("rttm", "vtt"))
    job = stack.create(JobRequest(ALICE, upload=True, filename="a.wav"))
    assert sorted(job.result) == ["error", "json", "rttm", "vtt"]
    assert stack.jobs.jobs[JOB_ID]["formats"] == ["rttm", "vtt"]


@pytest.mark.parametrize(
    "request_",
    [
        JobRequest(ALICE, s3_uri=f"s3://{BUCKET}/audio/a.wav", upload=True, filename="a.wav"),
        JobRequest(ALICE, s3_uri=f"s3://{BUCKET}/audio/a.wav", upload=False),
        JobRequest(ALICE, s3_uri=f"s3://{BUCKET}/audio/a.wav", filename="a.wav"),
        JobRequest(ALICE, s3_uri=f"s3://{BUCKET}/audio/a.wav", upload=None),  # sent, even if null
    ],
)
def test_both_an_object_and_an_upload_is_refused(stack: Stack, request_: JobRequest) -> None:
    stack.store.put(BUCKET, "audio/a.wav", b"RIFF")
    refused(stack, request_, InvalidRequestError, "not both")


@pytest.mark.parametrize(
    "request_",
    [
        JobRequest(ALICE),
        JobRequest(ALICE, filename="a.wav"),
        JobRequest(ALICE, upload=False, filename="a.wav"),
        JobRequest(ALICE, upload="yes", filename="a.wav"),  # only true asks for a form
    ],
)
def test_neither_an_object_nor_an_upload_is_refused(stack: Stack, request_: JobRequest) -> None:
    refused(stack, request_, InvalidRequestError, 'Give "s3_uri", or "upload": true')


@pytest.mark.parametrize(
    ("filename", "error", "match"),
    [
        ("folder/a.wav", InvalidParameterError, "without"),
        (None, InvalidParameterError, "without"),
        (7, InvalidParameterError, "without"),
        ("..", InvalidParameterError, "not a safe object name"),
        ("a\x01.wav", InvalidParameterError, "not a safe object name"),
        ("", InvalidParameterError, "not a safe object name"),
        ("a.error", InputNameReservedError, "error"),  # its result would be another input's error object
        ("${filename}", InvalidParameterError, 'must not contain "\\$"'),  # the form would take any name
        ("call-$1.wav", InvalidParameterError, 'must not contain "\\$"'),
    ],
)
def test_a_bad_upload_filename_is_refused(
    stack: Stack, filename: object, error: type[DiarizationError], match: str
) -> None:
    raised = refused(stack, JobRequest(ALICE, upload=True, filename=filename), error, match)
    assert error is not InvalidParameterError or raised.details.get("parameter") == "filename"


def test_without_an_input_bucket_no_upload_form_is_issued() -> None:
    refused(
        make_stack(input_bucket=None),
        JobRequest(ALICE, upload=True, filename="a.wav"),
        ConfigurationError,
        "INPUT_BUCKET",
    )


def test_without_a_work_queue_an_existing_object_is_refused() -> None:
    stack = make_stack(queue=False)
    stack.store.put(BUCKET, "audio/a.wav", b"RIFF")
    refused(stack, JobRequest(ALICE, s3_uri=f"s3://{BUCKET}/audio/a.wav"), ConfigurationError, "WORK_QUEUE_URL")


@pytest.mark.parametrize(
    "request_",
    [JobRequest(ALICE, upload=True, filename="a.wav"), JobRequest(ALICE, s3_uri=f"s3://{BUCKET}/audio/a.wav")],
)
def test_without_a_job_store_nothing_is_created(request_: JobRequest) -> None:
    stack = make_stack(jobs=False)
    stack.store.put(BUCKET, "audio/a.wav", b"RIFF")
    refused(stack, request_, ConfigurationError, "JOBS_TABLE")


def test_a_missing_object_is_refused_now_not_later_in_the_job(stack: Stack) -> None:
    refused(stack, JobRequest(ALICE, s3_uri=f"s3://{BUCKET}/audio/gone.wav"), InputNotFoundError, "does not exist")


@pytest.mark.parametrize(
    ("s3_uri", "match"),
    [
        ("s3://elsewhere/audio/a.wav", "input bucket"),
        (f"s3://{BUCKET}/results/a.wav.json", "s3_uri"),
        ("https://example.com/a.wav", "s3://bucket/key"),
        (None, "s3://bucket/key"),
    ],
)
def test_an_s3_uri_outside_the_inputs_is_refused(stack: Stack, s3_uri: object, match: str) -> None:
    refused(stack, JobRequest(ALICE, s3_uri=s3_uri), InvalidParameterError, match)


def test_another_callers_upload_does_not_exist_for_this_one(stack: Stack) -> None:
    """Whether it exists or not, and whether its job exists or not: the same answer as a missing object."""
    bobs = "b" * 32
    stack.jobs.create(bobs, owner=BOB, upload=True)
    stack.store.put(BUCKET, f"audio/uploads/{bobs}/secret.wav", b"RIFF")
    stack.store.put(BUCKET, f"audio/uploads/{'c' * 32}/orphan.wav", b"RIFF")
    jobs_before = dict(stack.jobs.jobs)
    for key in (f"audio/uploads/{bobs}/secret.wav", f"audio/uploads/{'c' * 32}/orphan.wav"):
        with pytest.raises(InputNotFoundError, match="or is not yours"):
            stack.create(JobRequest(ALICE, s3_uri=f"s3://{BUCKET}/{key}"))
    assert stack.jobs.jobs == jobs_before and stack.queue.sent == []


def test_a_callers_own_upload_may_be_diarized_again(stack: Stack) -> None:
    mine = "d" * 32
    stack.jobs.create(mine, owner=ALICE, upload=True)
    stack.store.put(BUCKET, f"audio/uploads/{mine}/talk.wav", b"RIFF")
    job = stack.create(JobRequest(ALICE, s3_uri=f"s3://{BUCKET}/audio/uploads/{mine}/talk.wav"))
    assert job.upload is None and [sent[0] for sent in stack.queue.sent] == [JOB_ID]


def test_the_owner_is_the_whole_principal_but_for_a_roles_session() -> None:
    """API Gateway's `requestContext.authorizer.iam.callerId` for each kind of principal: an assumed role's sessions
    share the role; federated users (`{account}:{name}`) and the root user (the account id) are tenants of their own."""
    from diarization.aws.api import ANONYMOUS, owner_of

    def owner(caller_id: str, account: str = "123456789012") -> str:
        return owner_of({"authorizer": {"iam": {"accountId": account, "callerId": caller_id}}})

    assert owner("AROAALICE:session-1") == owner("AROAALICE:session-2") == "123456789012:AROAALICE"
    assert owner("AIDABOB") == "123456789012:AIDABOB"
    federated, root = owner("123456789012:carol"), owner("123456789012")
    assert federated == "123456789012:123456789012:carol" and root == "123456789012:123456789012"
    assert len({federated, owner("123456789012:dave"), root}) == 3
    assert owner("AROAALICE:s", account="210987654321") != owner("AROAALICE:s")
    assert owner_of({}) == owner("", account="123456789012") == ANONYMOUS


def test_voiceprints_are_refused_for_an_object_of_the_shared_space(stack: Stack) -> None:
    """Its results are every caller's: a caller's speakers' names are only ever written for the caller's own upload."""
    voiceprint = Voiceprint("Alice", (0.6, 0.8), EmbeddingModel("m", "r1", 2), "2026-01-01T00:00:00Z", {})
    stack.store.put(BUCKET, "audio/shared.wav", b"RIFF")
    uri = f"s3://{BUCKET}/audio/shared.wav"
    error = refused(
        stack, JobRequest(ALICE, s3_uri=uri, voiceprints=(voiceprint,)), VoiceprintsOnSharedInputError, "shared"
    )
    assert error.code == "VOICEPRINTS_ON_SHARED_INPUT" and error.http_status == 400 and error.details == {"uri": uri}
    assert stack.create(JobRequest(ALICE, s3_uri=uri)).input.uri == uri  # without names: its shared results

    stack.jobs.create("b" * 32, owner=ALICE)
    own = f"s3://{BUCKET}/audio/uploads/{'b' * 32}/mine.wav"
    stack.store.put(BUCKET, own.removeprefix(f"s3://{BUCKET}/"), b"RIFF")
    stack.jobs.jobs.pop(JOB_ID)
    assert stack.create(JobRequest(ALICE, s3_uri=own, voiceprints=(voiceprint,))).input.uri == own
