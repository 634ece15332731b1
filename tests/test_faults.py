"""Fault injection against moto server over HTTP: duplicates, late and reordered reports, shared GPU inferences.

After each scenario the invariant is checked: for every input object exactly one of {result, error object}
exists and it describes the newest version; every job is terminal, or running while its work is in flight.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from diarization.aws.app import FunctionApp
from diarization.aws_ports.dynamodb_jobs import JobStore
from diarization.hints import SpeakerHints
from local_aws import Deployment, LambdaContext, create_deployment
from test_api import call

TERMINAL = ("succeeded", "failed")


@pytest.fixture()
def deployment(moto_endpoint: str) -> Deployment:
    return create_deployment()


def make_app(deployment: Deployment, model_dir: Path, scratch: Path, **extra: str) -> FunctionApp:
    env = {**os.environ, **deployment.env, "MODEL_DIR": str(model_dir), "NUM_THREADS": "2", **extra}
    app = FunctionApp(env)
    app.diarize_object.workdir = app.api.diarize_sync.workdir = scratch
    return app


@pytest.fixture()
def gpu_app(deployment: Deployment, tiny_model_dir: Path, tmp_path: Path) -> FunctionApp:
    """Everything above 10 s goes to the GPU; moto's InvokeEndpointAsync accepts it and does nothing else."""
    return make_app(deployment, tiny_model_dir, tmp_path, SAGEMAKER_ENDPOINT_NAME="gpu", GPU_THRESHOLD_SECONDS="10")


def completion(deployment: Deployment, key: str, inference_id: str, status: str, output: str | None = None) -> Any:
    """SageMaker's async notification, as SNS delivers it to the function."""
    notification: dict[str, Any] = {
        "invocationStatus": status,
        "inferenceId": inference_id,
        "eventSource": "aws:sagemaker",
        "requestParameters": {"inputLocation": f"s3://{deployment.bucket}/{key}"},
        "responseParameters": {"outputLocation": output} if output else {},
    }
    if status != "Completed":
        notification["failureReason"] = "ModelError: the container was stopped"
    return {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(notification)}}]}


def gpu_result(app: FunctionApp, deployment: Deployment, key: str, audio: Path, name: str) -> str:
    """What the endpoint would have written for `key`: a schema v1 result in its output location."""
    result = app.diarizer.diarize(audio, SpeakerHints(), f"s3://{deployment.bucket}/{key}").to_dict()
    deployment.s3.put_object(Bucket=deployment.bucket, Key=f"async/{name}.out", Body=json.dumps(result))
    return f"s3://{deployment.bucket}/async/{name}.out"


def jobs_of(deployment: Deployment) -> dict[str, dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=deployment.jobs_table)["Items"]
    return {item["job_id"]["S"]: item for item in items if not item["job_id"]["S"].startswith("inference-")}


def assert_invariant(deployment: Deployment) -> None:
    """Exactly one of {result, error object} per input, describing its current version; jobs ended."""
    s3 = deployment.s3
    for key in deployment.object_keys("audio/"):
        name = key.removeprefix("audio/")
        outputs = set(deployment.object_keys(f"results/{name}."))
        has_result = f"results/{name}.json" in outputs
        has_error = f"results/{name}.error.json" in outputs
        assert has_result != has_error, (key, outputs)
        current = s3.head_object(Bucket=deployment.bucket, Key=key)
        if has_error:
            described = deployment.get_json(f"results/{name}.error.json")["input"]
            assert described["etag"] == current["ETag"].strip('"'), (key, described)
            if "VersionId" in current and current["VersionId"] != "null":
                assert described["version_id"] == current["VersionId"]
        else:
            size = deployment.get_json(f"results/{name}.json")["input"]["size_bytes"]
            assert size == current["ContentLength"], (key, size)
    for job_id, job in jobs_of(deployment).items():
        assert job["status"]["S"] in TERMINAL, (job_id, job["status"]["S"])


def test_a_job_ends_once(deployment: Deployment) -> None:
    jobs = JobStore(deployment.jobs_table, 1)
    jobs.create("a" * 32)
    assert jobs.mark_running("a" * 32)
    assert jobs.finish("a" * 32, {"status": "succeeded", "speaker_count": 2})
    assert not jobs.finish("a" * 32, {"status": "failed", "error": {"code": "GPU_INFERENCE_FAILED"}})
    assert not jobs.mark_running("a" * 32)
    job = jobs.get("a" * 32)
    assert job is not None and job["status"] == "succeeded" and job["outcome"]["speaker_count"] == 2


def test_jobs_sharing_a_routed_inference_all_end_with_it(
    gpu_app: FunctionApp, deployment: Deployment, encoded_samples: dict[str, Path]
) -> None:
    """A second and a third job for an object already on the GPU replay its routing (idempotency): the second
    ends when the GPU reports, the third — created afterwards — ends at once."""
    key = "audio/long.flac"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["flac"].read_bytes())
    first = call(gpu_app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/{key}"})[1]
    second = call(gpu_app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/{key}"})[1]
    messages = [m for m in deployment.receive(wait=1) if '"job_id"' in m["Body"]]
    assert len(messages) == 2
    assert gpu_app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
    for job in (first, second):
        assert call(gpu_app, "GET", job["status_url"])[1]["status"] == "running"
    running = {job_id for job_id, item in jobs_of(deployment).items() if item["status"]["S"] == "running"}
    assert running == {first["job_id"], second["job_id"]}  # while the inference is in flight

    output = gpu_result(gpu_app, deployment, key, encoded_samples["flac"], "one")
    (done,) = gpu_app.lambda_handler(
        completion(deployment, key, first["job_id"], "Completed", output), LambdaContext()
    )["outcomes"]
    assert done["status"] == "succeeded"
    for job in (first, second):
        assert call(gpu_app, "GET", job["status_url"])[1]["status"] == "succeeded"

    third = call(gpu_app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/{key}"})[1]
    messages = [m for m in deployment.receive(wait=1) if '"job_id"' in m["Body"]]
    assert gpu_app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
    status = call(gpu_app, "GET", third["status_url"])[1]
    assert status["status"] == "succeeded" and status["speaker_count"] == done["speaker_count"]
    assert_invariant(deployment)
