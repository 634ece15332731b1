"""Fault injection at the GPU boundary, against moto server over HTTP: spoofed completions, completions without
their output, and routed or running work that never reports back (the overdue-work sweep).

Time is not waited for: the sweep takes `now`, and the tests pass a moment past the recorded deadline. After each
scenario the invariant of tests/test_faults.py holds, or — while a routed job is legitimately in flight — every
job is terminal or running within its deadline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from test_api import call
from test_faults import (
    assert_invariant,
    completion,
    deployment,
    gpu_app,
    gpu_completes,
    inference_of,
    jobs_of,
    make_app,
)

from diarization.aws.app import FunctionApp
from diarization.aws_ports.dynamodb_jobs import DynamoJobStore
from diarization.service.locations import ObjectRef
from diarization.service.model import Invocation
from infra.local_aws import Deployment, LambdaContext

__all__ = ["deployment", "gpu_app"]  # fixtures, used by name

SCHEDULED = {
    "version": "0",
    "id": "5f1d1f5e-0000-4000-8000-000000000000",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-26T02:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/diarization-EndOverdueJobs"],
    "detail": {},
}


def routed_job(app: FunctionApp, deployment: Deployment, key: str, audio: bytes) -> dict[str, Any]:
    """POST /jobs for `key`, its message processed: routed to the GPU (moto accepts and does nothing else)."""
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=audio)
    job = call(app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/{key}"})[1]
    messages = [m for m in deployment.receive(wait=1) if '"job_id"' in m["Body"]]
    assert app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
    assert call(app, "GET", job["status_url"])[1]["status"] == "running"
    return dict(job)


def sweep(app: FunctionApp, now: float) -> list[dict[str, Any]]:
    """What the scheduled event runs, at a chosen moment."""
    assert app.end_overdue_jobs is not None
    return [outcome.to_dict() for outcome in app.end_overdue_jobs(now, Invocation(request_id="sweep"))]


def assert_in_flight_or_ended(deployment: Deployment) -> None:
    """The invariant while a routed job is legitimately waiting: jobs terminal, or running within their deadline;
    the job's input has no outputs yet (nothing was written for it)."""
    jobs = DynamoJobStore(deployment.jobs_table, 1)
    items = boto3.client("dynamodb").scan(TableName=deployment.jobs_table)["Items"]
    for job_id, item in jobs_of(deployment).items():
        if item["status"]["S"] == "running":
            routed = [i["job_id"]["S"] for i in items if i["job_id"]["S"].startswith(f"inference-{job_id}-")]
            routing = jobs.routing(routed[0].removeprefix("inference-")) if routed else None
            deadline = routing.deadline if routing else float(item["deadline"]["N"])
            assert deadline is not None and deadline > time.time(), job_id


def spoofed(deployment: Deployment, job: dict[str, Any], key: str, **changes: str) -> dict[str, Any]:
    """The SNS event of a notification that names the routed job but differs in one field."""
    inference = inference_of(deployment, job["job_id"])
    routing = DynamoJobStore(deployment.jobs_table, 1).routing(inference)
    assert routing is not None
    event = completion(deployment, key, inference, "Completed", routing.output_location)
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    if "input" in changes:
        message["requestParameters"]["inputLocation"] = changes["input"]
    if "output" in changes:
        message["responseParameters"]["outputLocation"] = changes["output"]
    if "inference_id" in changes:
        message["inferenceId"] = changes["inference_id"]
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    return event


@pytest.mark.parametrize(
    "changes",
    [
        {"inference_id": "0" * 32},
        {"input": "s3://someone-elses-bucket/audio/spoof.flac"},
        {"input": "s3://BUCKET/elsewhere/spoof.flac"},
        {"output": "s3://BUCKET/audio/another-input.flac"},
    ],
    ids=["unknown-inference", "other-bucket", "outside-input-prefix", "other-output-location"],
)
def test_a_spoofed_completion_writes_and_changes_nothing(
    gpu_app: FunctionApp, deployment: Deployment, encoded_samples: dict[str, Path], changes: dict[str, str]
) -> None:
    key = "audio/spoof.flac"
    job = routed_job(gpu_app, deployment, key, encoded_samples["flac"].read_bytes())
    changes = {name: value.replace("BUCKET", deployment.bucket) for name, value in changes.items()}
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/another-input.flac", Body=b"{}")
    before = deployment.object_keys()

    (outcome,) = gpu_app.lambda_handler(spoofed(deployment, job, key, **changes), LambdaContext())["outcomes"]

    assert outcome["status"] == "skipped" and outcome["reason"].startswith("untrusted completion"), outcome
    assert deployment.object_keys() == before  # no result, no error object, nothing deleted, in any bucket we own
    assert "results/ere/spoof.flac.json" not in deployment.object_keys("results/")
    assert call(gpu_app, "GET", job["status_url"])[1]["status"] == "running"
    assert deployment.captured_events() == []
    deployment.s3.delete_object(Bucket=deployment.bucket, Key="audio/another-input.flac")
    assert_in_flight_or_ended(deployment)


def test_the_genuine_completion_after_a_spoofed_one_still_lands(
    gpu_app: FunctionApp, deployment: Deployment, encoded_samples: dict[str, Path]
) -> None:
    key = "audio/genuine.flac"
    job = routed_job(gpu_app, deployment, key, encoded_samples["flac"].read_bytes())
    gpu_app.lambda_handler(spoofed(deployment, job, key, output="s3://x/forged.out"), LambdaContext())

    done = gpu_completes(gpu_app, deployment, key, encoded_samples["flac"], inference_of(deployment, job["job_id"]))

    assert done["status"] == "succeeded"
    assert call(gpu_app, "GET", job["status_url"])[1]["status"] == "succeeded"
    assert_invariant(deployment)


def test_a_completion_whose_output_is_missing_fails_the_job_with_an_error_object(
    gpu_app: FunctionApp, deployment: Deployment, encoded_samples: dict[str, Path]
) -> None:
    """SageMaker said Completed, but nothing is at its output location: GPU_INFERENCE_FAILED, not an exception
    that SNS would retry and then drop."""
    key = "audio/missing.flac"
    job = routed_job(gpu_app, deployment, key, encoded_samples["flac"].read_bytes())
    inference = inference_of(deployment, job["job_id"])
    routing = DynamoJobStore(deployment.jobs_table, 1).routing(inference)
    assert routing is not None and routing.output_location
    bucket, _, output_key = routing.output_location.removeprefix("s3://").partition("/")
    deployment.s3.delete_object(Bucket=bucket, Key=output_key)  # moto wrote a canned answer there

    (outcome,) = gpu_app.lambda_handler(
        completion(deployment, key, inference, "Completed", routing.output_location), LambdaContext()
    )["outcomes"]

    assert outcome["status"] == "failed" and outcome["error"]["code"] == "GPU_INFERENCE_FAILED"
    status = call(gpu_app, "GET", job["status_url"])[1]
    assert status["status"] == "failed" and status["error"]["code"] == "GPU_INFERENCE_FAILED"
    assert deployment.object_keys("results/") == ["results/missing.flac.error.json"]
    assert_invariant(deployment)


def test_a_completion_without_an_output_location_fails_the_job(
    gpu_app: FunctionApp, deployment: Deployment, encoded_samples: dict[str, Path]
) -> None:
    key = "audio/nowhere.flac"
    job = routed_job(gpu_app, deployment, key, encoded_samples["flac"].read_bytes())

    inference = inference_of(deployment, job["job_id"])
    (outcome,) = gpu_app.lambda_handler(completion(deployment, key, inference, "Completed", None), LambdaContext())[
        "outcomes"
    ]

    assert outcome["error"]["code"] == "GPU_INFERENCE_FAILED" and "outputLocation" in outcome["error"]["message"]
    assert call(gpu_app, "GET", job["status_url"])[1]["status"] == "failed"
    assert_invariant(deployment)


def test_the_sweep_ends_a_routed_job_whose_gpu_never_answers(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    app = make_app(
        deployment,
        tiny_model_dir,
        tmp_path,
        SAGEMAKER_ENDPOINT_NAME="gpu",
        GPU_THRESHOLD_SECONDS="10",
        GPU_DEADLINE_SECONDS="600",
    )
    key = "audio/silent-gpu.flac"
    job = routed_job(app, deployment, key, encoded_samples["flac"].read_bytes())
    assert sweep(app, time.time()) == []  # within its deadline: left alone
    assert_in_flight_or_ended(deployment)

    ended = sweep(app, time.time() + 601)

    assert [(outcome["status"], outcome.get("job_id")) for outcome in ended] == [
        ("failed", None),
        ("failed", job["job_id"]),
    ]
    status = call(app, "GET", job["status_url"])[1]
    assert status["status"] == "failed" and status["error"]["code"] == "JOB_DEADLINE_EXCEEDED"
    error_object = deployment.get_json("results/silent-gpu.flac.error.json")
    assert error_object["error"]["details"]["where"] == "gpu"
    assert error_object["error"]["details"]["inference_id"] == inference_of(deployment, job["job_id"])
    assert sweep(app, time.time() + 601) == []  # it left the index: nothing ends twice
    assert_invariant(deployment)


def test_the_scheduled_event_sweeps_overdue_lambda_jobs_and_leaves_ended_ones(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """A job that started and never ended (its deliveries all died), next to one that succeeded: with a
    deadline of one minute, the scheduled event one minute later fails the first and leaves the second."""
    app = make_app(deployment, tiny_model_dir, tmp_path, JOB_DEADLINE_SECONDS="60")
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/ok.ogg", Body=encoded_samples["ogg"].read_bytes())
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/died.wav", Body=encoded_samples["wav"].read_bytes())
    done = call(app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/audio/ok.ogg"})[1]
    died = call(app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/audio/died.wav"})[1]
    messages = [m for m in deployment.receive(wait=1) if done["job_id"] in m["Body"]]
    assert app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
    jobs = DynamoJobStore(deployment.jobs_table, 1, job_deadline_seconds=60)
    died_input = ObjectRef(deployment.bucket, "audio/died.wav")
    assert jobs.mark_running(died["job_id"], died_input)  # what the dying run did first
    assert app.lambda_handler(SCHEDULED, LambdaContext()) == {"outcomes": []}  # within the minute

    (ended,) = sweep(app, time.time() + 61)

    assert ended["job_id"] == died["job_id"] and ended["error"]["code"] == "JOB_DEADLINE_EXCEEDED"
    assert call(app, "GET", died["status_url"])[1]["error"]["details"]["where"] == "lambda"
    assert call(app, "GET", done["status_url"])[1]["status"] == "succeeded"
    assert deployment.object_keys("results/") == [
        "results/died.wav.error.json",
        "results/ok.ogg.json",
        "results/ok.ogg.rttm",
    ]
    assert_invariant(deployment)


def test_ended_work_leaves_the_deadline_index(gpu_app: FunctionApp, deployment: Deployment) -> None:
    """The index holds open work only: a finished job and an ended inference are not read by any sweep."""
    jobs = DynamoJobStore(deployment.jobs_table, 1, job_deadline_seconds=60)
    jobs.create("b" * 32, owner="anonymous", input=f"s3://{deployment.bucket}/audio/x.wav")
    assert jobs.mark_running("b" * 32, ObjectRef(deployment.bucket, "audio/x.wav"))
    assert jobs.overdue_jobs(time.time() + 61) == ["b" * 32]
    assert jobs.finish("b" * 32, {"status": "succeeded"})
    assert jobs.overdue_jobs(time.time() + 10**6) == []
    index = boto3.client("dynamodb").scan(TableName=deployment.jobs_table, IndexName="running-by-deadline")
    assert index["Items"] == []
