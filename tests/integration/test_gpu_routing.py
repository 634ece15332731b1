"""Long audio through the GPU path, end to end here: Lambda routes it (real boto3 InvokeEndpointAsync), a
local stand-in for SageMaker async reads the input from moto S3 and posts it to the inference container
started with `serve`, writes the output, notifies SNS, and the function's completion path writes the
standard result. Short audio stays in Lambda. Both results follow the same schema."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
from test_api import call
from test_identification import ENROLL_ALICE, ENROLL_BOB, OTHER_FILE

from diarization.aws.api import ANONYMOUS
from diarization.aws.app import FunctionApp
from diarization.aws_ports.dynamodb_jobs import DynamoJobStore
from diarization.core.config import DEFAULT_VOICEPRINT_THRESHOLD, Settings
from diarization.core.engine import Diarizer, decode_within_limits
from diarization.core.result import load_schema
from diarization.service.locations import ObjectRef
from diarization.service.long_audio import gpu_reason
from diarization.service.routing import Routing
from infra.local_aws import Deployment, LambdaContext, create_deployment
from infra.local_sagemaker import AsyncEndpointStandIn, sns_event, topic_with_queue
from infra.media import encode_as, speech_like
from support.inference_container import Container

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
def make_gpu(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., GpuStack]]:
    made: list[GpuStack] = []

    def make(container: Container, model_dir: Path, threshold: str = "600") -> GpuStack:
        made.append(gpu_stack(container, model_dir, tmp_path, monkeypatch, threshold))
        return made[-1]

    yield make
    for stack in made:
        stack.stand_in.stop()


@pytest.fixture()
def gpu(make_gpu: Callable[..., GpuStack], container: Container, tiny_model_dir: Path) -> GpuStack:
    return make_gpu(container, tiny_model_dir)


def gpu_stack(
    container: Container, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: str = "600"
) -> GpuStack:
    """A deployment whose function (on `model_dir`) routes audio above `threshold` seconds to `container`."""
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
        "MODEL_DIR": str(model_dir),
        "NUM_THREADS": "2",
        "SAGEMAKER_ENDPOINT_NAME": ENDPOINT,
        "GPU_THRESHOLD_SECONDS": threshold,
    }
    app = FunctionApp(env)
    app.diarize_object.workdir = app.api.diarize_sync.workdir = tmp_path
    return GpuStack(deployment, stand_in, inbox, app)


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
    deployment = gpu.deployment
    status, job = call(gpu.app, "POST", "/jobs", {"upload": True, "filename": "long.flac", "num_speakers": 2})
    assert status == 202
    audio = encode_as(speech_like(700.0), 16_000, tmp_path, "flac").read_bytes()
    deployment.s3.put_object(Bucket=deployment.bucket, Key=f"audio/uploads/{job['job_id']}/long.flac", Body=audio)
    gpu.app.lambda_handler(deployment.sqs_event(deployment.notifications(1)), LambdaContext())
    assert call(gpu.app, "GET", job["status_url"])[1]["status"] == "running"
    assert gpu.stand_in.submitted[0]["inference_id"].startswith(f"{job['job_id']}-")  # the run's: job and version
    gpu.deliver_notifications(1)
    status, done = call(gpu.app, "GET", job["status_url"])
    assert status == 200 and done["status"] == "succeeded"
    assert done["speaker_count"] == 2  # the hint travelled to the GPU


def test_a_gpu_report_about_a_replaced_version_is_skipped(gpu: GpuStack, tmp_path: Path) -> None:
    """The object is overwritten with garbage after routing, before the GPU reads it. The GPU's failure (422
    INVALID_AUDIO, about the garbage) is reported for the routed version, which is no longer current: skipped, nothing
    written. The garbage's own event gives it its error object, INVALID_AUDIO, describing it."""
    deployment = gpu.deployment
    audio = encode_as(speech_like(650.0), 16_000, tmp_path, "ogg").read_bytes()
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/race.ogg", Body=audio)
    gpu.stand_in.running.clear()
    routed = deployment.notifications(1)
    gpu.app.lambda_handler(deployment.sqs_event(routed), LambdaContext())
    for message in routed:  # handled: the next notification is the overwrite's
        deployment.sqs.delete_message(QueueUrl=deployment.queue_url, ReceiptHandle=message["ReceiptHandle"])
    put = deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/race.ogg", Body=b"garbage" * 100)
    gpu.stand_in.running.set()
    (outcome,) = gpu.deliver_notifications(1)
    assert outcome["status"] == "skipped" and outcome["reason"].startswith("superseded"), outcome
    assert deployment.object_keys("results/") == []

    gpu.app.lambda_handler(deployment.sqs_event(deployment.notifications(1)), LambdaContext())

    body = deployment.get_json("results/race.ogg.error.json")
    jsonschema.validate(body, load_schema("error-v1.json"))
    assert body["error"]["code"] == "INVALID_AUDIO"
    assert body["input"]["uri"] == f"s3://{deployment.bucket}/audio/race.ogg"
    assert body["input"]["etag"] == put["ETag"].strip('"')
    assert "results/race.ogg.json" not in deployment.object_keys("results/")


def test_a_failure_without_a_body_is_gpu_inference_failed(gpu: GpuStack) -> None:
    lost = ObjectRef(gpu.deployment.bucket, "audio/lost.wav")
    gpu.deployment.s3.put_object(Bucket=lost.bucket, Key=lost.key, Body=b"the routed version, still current")
    jobs = DynamoJobStore(gpu.deployment.jobs_table, 1)
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
    assert (gpu_reason(audio, estimate, available, threshold_seconds=600.0) is not None) is routed


@pytest.fixture(scope="module")
def real_container(real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    server = Container(real_model_dir, tmp_path_factory.mktemp("gpu-real") / "server.log")
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def people(
    real_model_dir: Path, sample_samples: tuple[Any, int], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Alice's and Bob's voiceprints, enrolled from two parts of pyannote's sample with the real-weights pipeline
    (as in test_identification), and `both`: another part, re-encoded as 48 kHz stereo Opus, where both speak."""
    folder = tmp_path_factory.mktemp("people")
    samples, rate = sample_samples

    def cut(span: tuple[float, float], extension: str, stem: str) -> Path:
        return encode_as(samples[int(span[0] * rate) : int(span[1] * rate)], rate, folder, extension, stem)

    diarizer = Diarizer.from_settings(Settings(model_dir=real_model_dir, num_threads=2))
    voiceprints = {}
    for name, span in (("alice", ENROLL_ALICE), ("bob", ENROLL_BOB)):
        clip = cut(span, "wav", name)
        audio, _ = decode_within_limits(diarizer.settings, clip)
        voiceprints[name] = diarizer.enroll_decoded(audio, name, str(clip))[0].to_dict()
    return {"voiceprints": voiceprints, "both": cut(OTHER_FILE, "opus", "both").read_bytes()}


def routed_job_with_voiceprints(stack: GpuStack, people: dict[str, Any]) -> dict[str, Any]:
    """POST /jobs naming Alice and Bob (enrolled by the API's anonymous caller), the 10.5 s clip uploaded and routed
    (the stack's threshold is 5 s); returns the job, with the run's `inference_id`, once the endpoint has answered,
    before the function hears of it."""
    deployment = stack.deployment
    for name, body in people["voiceprints"].items():
        stack.app.api.voiceprints.store.put(ANONYMOUS, name, body)  # type: ignore[union-attr]
    request = {"upload": True, "filename": "both.opus", "voiceprints": ["alice", "bob"]}
    status, job = call(stack.app, "POST", "/jobs", request)
    assert status == 202, job
    key = f"audio/uploads/{job['job_id']}/both.opus"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=people["both"])
    stack.app.lambda_handler(deployment.sqs_event(deployment.notifications(1)), LambdaContext())
    (submitted,) = stack.stand_in.submitted
    assert "speaker_embeddings=true" in submitted["custom_attributes"].split(",")
    assert call(stack.app, "GET", job["status_url"])[1]["status"] == "running"
    stack.stand_in.wait_idle()
    return {**job, "inference_id": submitted["inference_id"]}


def result_key(job: dict[str, Any], suffix: str = "") -> str:
    return str(job["result"]["json"]).split("/", 3)[3].removesuffix(".json") + (suffix or ".json")


def test_a_routed_job_names_its_speakers_as_the_lambda_path_does(
    make_gpu: Callable[..., GpuStack], real_container: Container, real_model_dir: Path, people: dict[str, Any]
) -> None:
    stack = make_gpu(real_container, real_model_dir, "5")
    job = routed_job_with_voiceprints(stack, people)
    output = stack.deployment.get_json(f"async/{job['inference_id']}.out")
    assert set(output["speaker_embeddings"]) == {speaker["id"] for speaker in output["speakers"]}
    assert all(speaker["name"] is None for speaker in output["speakers"])  # the voiceprints never left Lambda

    (outcome,) = stack.deliver_notifications(1)
    assert outcome["status"] == "succeeded", outcome
    result = stack.deployment.get_json(result_key(job))
    jsonschema.validate(result, load_schema())
    assert "speaker_embeddings" not in result  # the job did not ask for them
    assert result["identification"] == {"threshold": DEFAULT_VOICEPRINT_THRESHOLD, "voiceprints": ["alice", "bob"]}
    assert sorted(speaker["name"] for speaker in result["speakers"]) == ["alice", "bob"]
    assert call(stack.app, "GET", job["status_url"])[1]["status"] == "succeeded"

    # The same clip through POST /diarize (diarized and named in Lambda) names the same speakers the same way.
    audio = base64.b64encode(people["both"]).decode()
    request = {"audio_base64": audio, "filename": "both.opus", "voiceprints": ["alice", "bob"]}
    status, in_lambda = call(stack.app, "POST", "/diarize", request)
    assert status == 200, in_lambda
    assert [(s["id"], s["name"]) for s in result["speakers"]] == [(s["id"], s["name"]) for s in in_lambda["speakers"]]
    for routed, local in zip(result["speakers"], in_lambda["speakers"], strict=True):
        assert routed["similarity"] == pytest.approx(local["similarity"], abs=1e-3)
        assert routed["confidence"] == pytest.approx(local["confidence"], abs=1e-2)
        assert routed["similarity"] >= DEFAULT_VOICEPRINT_THRESHOLD and routed["confidence"] > 0.1


def test_a_routed_result_without_embeddings_says_it_was_not_identified(
    make_gpu: Callable[..., GpuStack], real_container: Container, real_model_dir: Path, people: dict[str, Any]
) -> None:
    """An endpoint that ignores `speaker_embeddings=true` (an image older than the function's), played by removing
    them from its output before the function reads it: anonymous speakers and a warning, never silence."""
    stack = make_gpu(real_container, real_model_dir, "5")
    job = routed_job_with_voiceprints(stack, people)
    key = f"async/{job['inference_id']}.out"
    output = stack.deployment.get_json(key)
    del output["speaker_embeddings"]
    stack.deployment.s3.put_object(Bucket=stack.deployment.bucket, Key=key, Body=json.dumps(output).encode())

    (outcome,) = stack.deliver_notifications(1)
    assert outcome["status"] == "succeeded", outcome
    result = stack.deployment.get_json(result_key(job))
    jsonschema.validate(result, load_schema())
    assert result["speakers"] and all(speaker["name"] is None for speaker in result["speakers"])
    assert "identification" not in result
    (warning,) = [text for text in result["warnings"] if text.startswith("NOT IDENTIFIED")]
    assert "['alice', 'bob']" in warning and "no speaker embeddings" in warning


def test_voiceprints_of_another_model_than_the_endpoints_are_refused(
    make_gpu: Callable[..., GpuStack], container: Container, real_model_dir: Path, people: dict[str, Any]
) -> None:
    """The function runs the real-weights model (the voiceprints' own, so POST /jobs accepts them), the endpoint
    the tiny one: its centroids live in another space, and the job fails as the Lambda path would fail it."""
    stack = make_gpu(container, real_model_dir, "5")
    job = routed_job_with_voiceprints(stack, people)
    (outcome,) = stack.deliver_notifications(1)
    assert outcome["status"] == "failed" and outcome["error"]["code"] == "VOICEPRINT_MODEL_MISMATCH"
    body = stack.deployment.get_json(result_key(job, ".error.json"))
    jsonschema.validate(body, load_schema("error-v1.json"))
    assert body["error"]["details"]["voiceprints"] == ["alice", "bob"]
    assert result_key(job) not in stack.deployment.object_keys("results/")
    ended = call(stack.app, "GET", job["status_url"])[1]
    assert ended["status"] == "failed" and ended["error"]["code"] == "VOICEPRINT_MODEL_MISMATCH"
