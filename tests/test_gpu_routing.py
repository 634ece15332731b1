"""Long audio through the GPU path, end to end here: Lambda routes it (real boto3 InvokeEndpointAsync), a
local stand-in for SageMaker async reads the input from moto S3 and posts it to the inference container
started with `serve`, writes the output, notifies SNS, and the function's completion path writes the
standard result. Short audio stays in Lambda. Both results follow the same schema."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest

from diarization.aws.app import FunctionApp
from diarization.aws_ports.dynamodb_jobs import JobStore
from diarization.aws_ports.sagemaker import GpuRouter
from diarization.result import load_schema
from diarization.service.locations import ObjectRef
from diarization.service.routing import Routing
from inference_container import Container
from local_aws import Deployment, LambdaContext, create_deployment
from local_sagemaker import AsyncEndpointStandIn, sns_event, topic_with_queue
from media import encode_as, speech_like

ENDPOINT = "diarization-gpu"


@pytest.fixture(scope="module")
def container(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    server = Container(tiny_model_dir, tmp_path_factory.mktemp("gpu") / "server.log")
    server.wait_ready()
    yield server
    server.stop()


class GpuStack:
    def __init__(self, deployment: Deployment, stand_in: AsyncEndpointStandIn, inbox: str, app: FunctionApp) -> None:
        self.deployment, self.stand_in, self.inbox, self.app = deployment, stand_in, inbox, app

    def deliver_notifications(self, expected: int) -> list[dict[str, Any]]:
        """Wait for SageMaker's notifications and hand them to the function, as the SNS subscription would."""
        self.stand_in.wait_idle()
        messages: list[dict[str, Any]] = []
        for _ in range(20):
            messages += self.deployment.receive(self.inbox, wait=1)
            if len(messages) >= expected:
                break
        assert len(messages) == expected
        return list(self.app.lambda_handler(sns_event(messages), LambdaContext())["outcomes"])


@pytest.fixture()
def gpu(
    moto_endpoint: str, container: Container, tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> Iterator[GpuStack]:
    deployment = create_deployment()
    success, inbox = topic_with_queue(f"{deployment.bucket}-success")
    error = boto3.client("sns").create_topic(Name=f"{deployment.bucket}-error")["TopicArn"]
    boto3.client("sns").subscribe(
        TopicArn=error,
        Protocol="sqs",
        Endpoint=boto3.client("sqs").get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ],
    )
    stand_in = AsyncEndpointStandIn(
        ENDPOINT, container.port, f"s3://{deployment.bucket}/async/", success, error
    ).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", stand_in.url)
    env = {
        **os.environ,
        **deployment.env,
        "MODEL_DIR": str(tiny_model_dir),
        "NUM_THREADS": "2",
        "SAGEMAKER_ENDPOINT_NAME": ENDPOINT,
        "GPU_THRESHOLD_SECONDS": "600",
    }
    app = FunctionApp(env)
    app.diarize_object.workdir = app.api.diarize_sync.workdir = tmp_path
    yield GpuStack(deployment, stand_in, inbox, app)
    stand_in.stop()


def test_twenty_minutes_via_the_gpu_one_minute_via_lambda(gpu: GpuStack, tmp_path: Path) -> None:
    deployment = gpu.deployment
    long_audio = encode_as(speech_like(1200.0, seed=3), 16_000, tmp_path, "ogg", stem="long").read_bytes()
    short_audio = encode_as(speech_like(60.0, seed=4), 16_000, tmp_path, "ogg", stem="short").read_bytes()
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/meetings/board meeting.ogg", Body=long_audio)
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/meetings/stand-up.ogg", Body=short_audio)

    response = gpu.app.lambda_handler(deployment.sqs_event(deployment.notifications(2)), LambdaContext())
    assert response == {"batchItemFailures": []}
    assert deployment.object_keys("results/") == [
        "results/meetings/stand-up.ogg.json",
        "results/meetings/stand-up.ogg.rttm",
    ]
    (submitted,) = gpu.stand_in.submitted
    assert submitted["input_location"] == f"s3://{deployment.bucket}/audio/meetings/board meeting.ogg"

    (outcome,) = gpu.deliver_notifications(1)
    assert outcome["status"] == "succeeded"
    assert deployment.object_keys("results/") == [
        "results/meetings/board meeting.ogg.json",
        "results/meetings/board meeting.ogg.rttm",
        "results/meetings/stand-up.ogg.json",
        "results/meetings/stand-up.ogg.rttm",
    ]
    schema = load_schema()
    long_result = deployment.get_json("results/meetings/board meeting.ogg.json")
    short_result = deployment.get_json("results/meetings/stand-up.ogg.json")
    for result in (long_result, short_result):
        jsonschema.validate(result, schema)
    assert long_result["input"]["uri"] == f"s3://{deployment.bucket}/audio/meetings/board meeting.ogg"
    assert long_result["audio"]["duration_seconds"] == pytest.approx(1200.0, abs=0.1)
    assert short_result["audio"]["duration_seconds"] == pytest.approx(60.0, abs=0.1)
    assert set(long_result) == set(short_result)
    rttm = deployment.s3.get_object(Bucket=deployment.bucket, Key="results/meetings/board meeting.ogg.rttm")
    assert rttm["Body"].read().decode().startswith("SPEAKER board_meeting 1 ")
    kinds = sorted(event["detail-type"] for event in deployment.captured_events())
    assert kinds == ["Diarization Succeeded", "Diarization Succeeded"]


def test_a_routed_job_finishes_when_the_gpu_reports(gpu: GpuStack, tmp_path: Path) -> None:
    from test_api import call

    deployment = gpu.deployment
    status, job = call(gpu.app, "POST", "/jobs", {"upload": True, "filename": "long.flac", "num_speakers": 2})
    assert status == 202
    audio = encode_as(speech_like(700.0), 16_000, tmp_path, "flac").read_bytes()
    deployment.s3.put_object(Bucket=deployment.bucket, Key=f"audio/uploads/{job['job_id']}/long.flac", Body=audio)
    gpu.app.lambda_handler(deployment.sqs_event(deployment.notifications(1)), LambdaContext())
    assert call(gpu.app, "GET", job["status_url"])[1]["status"] == "running"
    assert gpu.stand_in.submitted[0]["inference_id"] == job["job_id"]
    gpu.deliver_notifications(1)
    status, done = call(gpu.app, "GET", job["status_url"])
    assert status == 200 and done["status"] == "succeeded"
    assert done["speaker_count"] == 2  # the hint travelled to the GPU


def test_a_gpu_failure_becomes_the_error_object(gpu: GpuStack, tmp_path: Path) -> None:
    """The object is overwritten with garbage after routing, before the GPU reads it: 422 INVALID_AUDIO."""
    deployment = gpu.deployment
    audio = encode_as(speech_like(650.0), 16_000, tmp_path, "ogg").read_bytes()
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/race.ogg", Body=audio)
    gpu.stand_in.running.clear()
    gpu.app.lambda_handler(deployment.sqs_event(deployment.notifications(1)), LambdaContext())
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/race.ogg", Body=b"garbage" * 100)
    gpu.stand_in.running.set()
    (outcome,) = gpu.deliver_notifications(1)
    assert outcome["status"] == "failed" and outcome["error"]["code"] == "INVALID_AUDIO"
    body = deployment.get_json("results/race.ogg.error.json")
    jsonschema.validate(body, load_schema("error-v1.json"))
    assert body["error"]["code"] == "INVALID_AUDIO"
    assert body["input"]["uri"] == f"s3://{deployment.bucket}/audio/race.ogg"
    assert "results/race.ogg.json" not in deployment.object_keys("results/")


def test_a_failure_without_a_body_is_gpu_inference_failed(gpu: GpuStack) -> None:
    lost = ObjectRef(gpu.deployment.bucket, "audio/lost.wav")
    jobs = JobStore(gpu.deployment.jobs_table, 1)
    jobs.record_routing(Routing("abc", lost, output_location=None, failure_location=None))
    notification = {
        "invocationStatus": "Failed",
        "failureReason": "ModelError: the container was stopped",
        "requestParameters": {"inputLocation": f"s3://{gpu.deployment.bucket}/audio/lost.wav"},
        "inferenceId": "abc",
        "eventSource": "aws:sagemaker",
    }
    event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(notification)}}]}
    (outcome,) = gpu.app.lambda_handler(event, LambdaContext())["outcomes"]
    assert outcome["error"]["code"] == "GPU_INFERENCE_FAILED" and "container was stopped" in outcome["error"]["message"]


@pytest.mark.parametrize(
    ("audio", "estimate", "available", "routed"),
    [
        (600.0, 10.0, None, False),  # at the threshold: Lambda
        (600.001, 10.0, None, True),  # just above: GPU
        (100.0, 299.0, 300.0, False),  # fits the time left
        (100.0, 301.0, 300.0, True),  # does not fit: GPU, however short
    ],
)
def test_routing_edges(audio: float, estimate: float, available: float | None, routed: bool) -> None:
    router = GpuRouter("endpoint", 600.0, client=object())
    assert (router.reason(audio, estimate, available) is not None) is routed
