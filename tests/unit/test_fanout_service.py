"""The fan-out's decisions with in-memory ports (fast): which route long audio takes, what is staged and recorded,
a second start of the same run, the error a failed execution ends with, the overdue sweep, the settings.

The state machine itself runs in tests/test_fanout_aws.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from diarization.aws.events import kind_of
from diarization.aws.settings import AwsSettings
from diarization.core.engine import Diarizer
from diarization.core.hints import SpeakerHints
from diarization.errors import ConfigurationError, UnsupportedEventError
from diarization.fanout.plan import AUDIO_FACTS_OBJECT, AUDIO_OBJECT
from diarization.service.fanout_steps import step_error
from diarization.service.locations import ObjectRef, parse_s3_uri
from diarization.service.model import Invocation, ObjectRequest
from diarization.service.outcomes import Failed, Outcome, Routed, Succeeded
from diarization.service.routing import STEPFUNCTIONS
from infra.media import encode_as, speech_like
from support.service import BUCKET, WORK, Service, make_service

MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:fanout"


def make_stack(
    diarizer: Diarizer,
    workdir: Path,
    *,
    gpu: bool = True,
    fanout: bool = True,
    mode: str = "auto",
    prefer_gpu: bool = False,
) -> Service:
    """The use cases on a versioned bucket, with the GPU endpoint and the fan-out deployed or not."""
    return make_service(
        diarizer, workdir, versioned=True, gpu=gpu, fanout=mode if fanout else None, prefer_gpu=prefer_gpu
    )


TIGHT = Invocation.from_remaining(10.0, "req")
"""5 s after the margin: 30 s of audio (about 17 s of work at RTF 0.5) does not fit."""


def run(stack: Service, samples: np.ndarray, tmp_path: Path, invocation: Invocation, job_id: str = "job1") -> Outcome:
    stack.store.put(BUCKET, f"audio/{job_id}.flac", encode_as(samples, 16_000, tmp_path, "flac").read_bytes())
    stack.jobs.create(job_id, hints={"num_speakers": 2})
    return stack.diarize_object(ObjectRequest(ObjectRef(BUCKET, f"audio/{job_id}.flac"), job_id=job_id), invocation)


@pytest.mark.parametrize(
    ("deployed", "mode", "prefer_gpu", "invocation", "expected"),
    [
        ({"gpu", "fanout"}, "auto", False, TIGHT, "fanout"),
        ({"gpu", "fanout"}, "auto", True, TIGHT, "gpu"),
        ({"fanout"}, "auto", False, TIGHT, "fanout"),
        ({"gpu"}, "auto", False, TIGHT, "gpu"),
        (set(), "auto", False, TIGHT, "AUDIO_TOO_LONG_FOR_LAMBDA"),
        ({"fanout"}, "never", False, TIGHT, "AUDIO_TOO_LONG_FOR_LAMBDA"),
        ({"gpu", "fanout"}, "auto", False, Invocation(), "here"),
        ({"fanout"}, "always", False, Invocation(), "fanout"),
        ({"gpu", "fanout"}, "always", True, Invocation(), "fanout"),  # nothing for the GPU to take: it fits
    ],
)
def test_where_long_audio_goes(
    diarizer: Diarizer,
    tmp_path: Path,
    deployed: set[str],
    mode: str,
    prefer_gpu: bool,
    invocation: Invocation,
    expected: str,
) -> None:
    stack = make_stack(
        diarizer, tmp_path, gpu="gpu" in deployed, fanout="fanout" in deployed, mode=mode, prefer_gpu=prefer_gpu
    )
    outcome = run(stack, speech_like(30.0, seed=1), tmp_path, invocation)
    if expected == "here":
        assert isinstance(outcome, Succeeded)
    elif expected in ("fanout", "gpu"):
        assert isinstance(outcome, Routed)
        assert outcome.endpoint == (MACHINE if expected == "fanout" else "gpu-endpoint")
        assert bool(stack.fanout.started) == (expected == "fanout")
        assert bool(stack.router.submitted) == (expected == "gpu")
    else:
        assert isinstance(outcome, Failed) and outcome.error["code"] == expected
        assert not stack.fanout.started and not stack.router.submitted


def test_silence_is_never_fanned_out(diarizer: Diarizer, tmp_path: Path) -> None:
    stack = make_stack(diarizer, tmp_path, gpu=False, mode="always")
    outcome = run(stack, np.zeros(16_000 * 30, dtype=np.float32), tmp_path, Invocation())
    assert isinstance(outcome, Succeeded) and outcome.speaker_count == 0
    assert not stack.fanout.started


def test_the_staged_audio_and_the_routing_record(diarizer: Diarizer, tmp_path: Path) -> None:
    """The decoded samples as raw float32 (a shard reads its range), their facts, and a routing with what the steps
    may trust: hints, voiceprints, formats, the pinned version and its order. The job waits for the execution."""
    stack = make_stack(diarizer, tmp_path, gpu=False, mode="always")
    samples = speech_like(30.0, seed=2)
    outcome = run(stack, samples, tmp_path, Invocation())
    assert isinstance(outcome, Routed) and stack.fanout.started == [outcome.inference_id]
    name = outcome.inference_id  # the job's id and its version's: one run, one execution, one folder
    assert name.startswith("job1-")
    assert outcome.output_location == f"s3://work/{name}/result.json"
    assert outcome.failure_location == f"s3://work/{name}/failure.json"
    staged = np.frombuffer(stack.store.get_bytes(WORK, f"{name}/{AUDIO_OBJECT}"), dtype="<f4")
    facts = stack.store.get_json(WORK, f"{name}/{AUDIO_FACTS_OBJECT}")
    assert facts["num_samples"] == staged.shape[0] == 480_000 and facts["sample_rate"] == 16_000
    assert facts["peak"] == pytest.approx(float(np.abs(staged).max()))
    assert facts["facts"]["codec"] == "flac" and facts["facts"]["duration_seconds"] == pytest.approx(30.0)
    routing = stack.jobs.routing(name)
    assert routing is not None and routing.engine == STEPFUNCTIONS
    assert routing.hints == SpeakerHints(num_speakers=2)
    _, current = stack.store.head(ObjectRef(BUCKET, "audio/job1.flac"))
    assert routing.ref == current and routing.order is not None and routing.order.version == current.version_id
    job = stack.jobs.get("job1")
    assert job is not None and job["status"] == "running"


def test_a_second_start_of_the_same_run_is_the_same_execution(diarizer: Diarizer, tmp_path: Path) -> None:
    """Without idempotency (or racing it) the run stages and starts again: the name is taken, nothing else happens;
    after the execution has ended, recording the routing again does not reopen it."""
    stack = make_stack(diarizer, tmp_path, gpu=False, mode="always")
    first = run(stack, speech_like(30.0, seed=3), tmp_path, Invocation())
    assert isinstance(first, Routed)
    stack.jobs.end_inference(first.inference_id, {"status": "succeeded"})
    request = ObjectRequest(ObjectRef(BUCKET, "audio/job1.flac"), job_id="job1")
    again = stack.diarize_object(request, Invocation())
    assert isinstance(again, Routed) and stack.fanout.started == [first.inference_id]
    routing = stack.jobs.routing(first.inference_id)
    assert routing is not None and routing.ended


def test_a_failed_execution_ends_with_a_typed_error_or_fanout_failed() -> None:
    """Our typed errors keep their code (by their class name, Lambda's errorType); anything else is FANOUT_FAILED
    with Step Functions' error name and the step's message."""
    cause = json.dumps({"errorType": "InputNotFoundError", "errorMessage": "INPUT_NOT_FOUND: s3://a/b does not exist."})
    typed = step_error("run1", {"Error": "InputNotFoundError", "Cause": cause})
    assert (typed.code, typed.message, typed.details) == (
        "INPUT_NOT_FOUND",
        "s3://a/b does not exist.",
        {"execution": "run1"},
    )
    crashed = step_error("run1", {"Error": "Lambda.Unknown", "Cause": "Runtime.ExitError: signal: killed"})
    assert crashed.code == "FANOUT_FAILED" and crashed.details == {"execution": "run1", "step_error": "Lambda.Unknown"}
    assert "signal: killed" in crashed.message
    unknown = step_error("run1", {"Error": "DiarizationError", "Cause": "x" * 5000})
    assert unknown.code == "FANOUT_FAILED" and len(unknown.message) < 1200  # the base class is no code of its own
    assert step_error("run1", None).details == {"execution": "run1", "step_error": "States.Runtime"}


def test_an_overdue_fanout_ends_like_a_gpu_inference(diarizer: Diarizer, tmp_path: Path) -> None:
    stack = make_stack(diarizer, tmp_path, gpu=False, mode="always")
    run(stack, speech_like(30.0, seed=4), tmp_path, Invocation())
    outcomes = stack.overdue(time.time() + 1e6, Invocation())
    assert [outcome.status for outcome in outcomes] == ["failed", "failed"]  # the inference's input, and its job
    error = outcomes[0].to_dict()["error"]
    assert error["code"] == "JOB_DEADLINE_EXCEEDED" and error["details"]["where"] == "fanout"
    assert "Step Functions" in error["message"] and "job1" in error["message"]
    job = stack.jobs.get("job1")
    assert job is not None and job["status"] == "failed"


@pytest.mark.parametrize("status", ["Completed", "Failed"])
def test_an_unreadable_fanout_report_fails_as_fanout_failed_not_as_the_gpu(
    diarizer: Diarizer, tmp_path: Path, status: str
) -> None:
    """The code names where to look: a fan-out whose result (or failure body) cannot be read is FANOUT_FAILED, with its
    execution, not GPU_INFERENCE_FAILED and the endpoint's logs."""
    stack = make_stack(diarizer, tmp_path, gpu=True, mode="always")
    run(stack, speech_like(30.0, seed=5), tmp_path, Invocation())
    (name,) = stack.fanout.started
    routing = stack.jobs.routing(name)
    assert routing is not None
    location = routing.output_location if status == "Completed" else routing.failure_location
    ref = parse_s3_uri(location)
    stack.store.put(ref.bucket, ref.key, b"not json")
    complete = stack.complete
    notification = {
        "invocationStatus": status,
        "inferenceId": name,
        "requestParameters": {"inputLocation": routing.ref.uri},
        "responseParameters": {"outputLocation" if status == "Completed" else "failureLocation": location},
        "failureReason": "",
    }

    outcome = complete(notification, Invocation()).to_dict()

    assert outcome["status"] == "failed" and outcome["error"]["code"] == "FANOUT_FAILED"
    assert outcome["error"]["details"]["execution"] == name and "GPU" not in outcome["error"]["message"]
    job = stack.jobs.get("job1")
    assert job is not None and job["status"] == "failed" and job["outcome"]["error"]["code"] == "FANOUT_FAILED"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"FANOUT": "sometimes"}, "FANOUT='sometimes' must be one of auto, always, never"),
        ({"LONG_AUDIO_ROUTE": "cpu"}, "LONG_AUDIO_ROUTE='cpu' must be one of fanout, gpu"),
        ({"FANOUT_STATE_MACHINE_ARN": MACHINE, "JOBS_TABLE": "jobs"}, "needs FANOUT_WORK_BUCKET"),
        ({"FANOUT_STATE_MACHINE_ARN": MACHINE, "FANOUT_WORK_BUCKET": WORK}, "and JOBS_TABLE"),
        ({"FANOUT_SHARD_SECONDS": "0"}, "FANOUT_SHARD_SECONDS=0 must be at least 1.0"),
    ],
)
def test_fanout_settings_are_checked(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        AwsSettings.from_env(env)


def test_a_step_event_is_told_apart_from_other_events() -> None:
    assert kind_of({"fanout": {"step": "plan", "execution": "a" * 32}}) == "fanout"
    for other in ({"fanout": "plan"}, {"fanout": {}, "bucket": "b"}):
        with pytest.raises(UnsupportedEventError):
            kind_of(other)
