"""The fan-out end to end on this machine: the function (in process) stages an upload and starts the state machine,
moto executes the template's own definition file, and each step runs the real handler under the runtime emulator
(``infra/local_stepfunctions.py``): plan -> shards -> reduce -> publish, the result in S3, the job succeeded.

The pipeline is the tiny one, with batch sizes of 4 chunks and FANOUT_SHARD_SECONDS=8, so pyannote's 30 s sample is
3 shards (8 + 8 + 5 chunks of its 21). Faults are real: a shard's runtime is killed (SIGKILL, as Lambda ends a sandbox
out of memory) once, or on every attempt (``tests/support/fanout_faults.py``).
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import numpy as np
import pytest
from test_api import call
from test_faults import as_s3_sends, assert_invariant

from diarization.aws.app import FunctionApp
from diarization.aws_ports.dynamodb_jobs import DynamoJobStore
from diarization.aws_ports.s3 import S3Store
from diarization.core.result import load_schema
from diarization.errors import ConfigurationError, InvalidRequestError
from diarization.service.fanout import ArrayReader
from diarization.service.locations import ObjectRef
from diarization.service.routing import Routing
from infra.local_aws import Deployment, LambdaContext, create_deployment
from infra.local_stepfunctions import ACCOUNT, LocalFunction, LocalStepFunctions
from infra.media import encode_as, speech_like
from infra.runtime_emulator import ROOT

TEMPLATE = ROOT / "template.yaml"
SHARDS = 3


@dataclass
class FanoutStack:
    deployment: Deployment
    work_bucket: str
    app: FunctionApp
    """The function that receives uploads (in process): it stages and starts."""
    machine: str
    function: LocalFunction
    """The same function as the state machine's steps run it (emulated)."""
    env: dict[str, str]
    fault_dir: Path | None = None

    def deliver(self, expected: int = 1, app: FunctionApp | None = None) -> list[dict[str, Any]]:
        """The upload notifications, handled and deleted as Lambda's SQS poller would."""
        messages = [m for m in self.deployment.notifications(expected) if '"Records"' in m["Body"]]
        response = (app or self.app).lambda_handler(self.deployment.sqs_event(messages), LambdaContext())
        assert response == {"batchItemFailures": []}
        for message in messages:
            self.deployment.sqs.delete_message(
                QueueUrl=self.deployment.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
        return messages

    def executions(self) -> list[dict[str, Any]]:
        return list(boto3.client("stepfunctions").list_executions(stateMachineArn=self.machine)["executions"])

    def history(self, name: str) -> list[dict[str, Any]]:
        arn = f"{self.machine.replace(':stateMachine:', ':execution:')}:{name}"
        return list(boto3.client("stepfunctions").get_execution_history(executionArn=arn, maxResults=1000)["events"])

    def run_of(self, job_id: str) -> str:
        """The execution a job's run fanned out as (named after the job and its input's version)."""
        (name,) = [e["name"] for e in self.executions() if e["name"].startswith(f"{job_id}-")]
        return str(name)

    def finished(self, name: str) -> dict[str, Any]:
        return LocalStepFunctions.wait(f"{self.machine.replace(':stateMachine:', ':execution:')}:{name}")

    def job(self, app: FunctionApp, job_id: str) -> dict[str, Any]:
        status, job = call(app, "GET", f"/jobs/{job_id}")
        assert status == 200
        return dict(job)

    def new_job(self, filename: str) -> tuple[str, str]:
        status, job = call(self.app, "POST", "/jobs", {"upload": True, "filename": filename})
        assert status == 202, job
        return str(job["job_id"]), f"audio/uploads/{job['job_id']}/{filename}"


@pytest.fixture(scope="module")
def local_sfn(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStepFunctions]:
    with LocalStepFunctions(moto_endpoint, tmp_path_factory.mktemp("emulators")) as local:
        yield local


def make_stack(
    local: LocalStepFunctions,
    model_dir: Path,
    handler: str,
    fault_dir: Path | None = None,
    reserved_concurrency: int | None = None,
) -> FanoutStack:
    deployment = create_deployment(versioned=True)
    suffix = uuid.uuid4().hex[:8]
    work = f"work-{suffix}"
    boto3.client("s3").create_bucket(Bucket=work)
    function_name, machine_name = f"diarization-{suffix}", f"fanout-{suffix}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        **deployment.env,
        "MODEL_DIR": str(model_dir),
        "NUM_THREADS": "1",
        "SEGMENTATION_BATCH_SIZE": "4",
        "EMBEDDING_BATCH_SIZE": "4",
        "FANOUT": "always",
        "FANOUT_SHARD_SECONDS": "8",
        "FANOUT_WORK_BUCKET": work,
        "FANOUT_STATE_MACHINE_ARN": f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{machine_name}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "function"), str(ROOT / "tests")]),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": "300",
        **({"FAULT_DIR": str(fault_dir)} if fault_dir else {}),
    }
    arn = local.add_function(function_name, env, handler, reserved_concurrency)
    machine = local.create_state_machine(TEMPLATE, machine_name, {"FunctionArn": arn, "MapMaxConcurrency": str(SHARDS)})
    assert machine == env["FANOUT_STATE_MACHINE_ARN"]
    return FanoutStack(deployment, work, FunctionApp(env), machine, local.functions[function_name], env, fault_dir)


@pytest.fixture(scope="module")
def stack(local_sfn: LocalStepFunctions, tiny_model_dir: Path) -> FanoutStack:
    return make_stack(local_sfn, tiny_model_dir, "diarization.handler.lambda_handler")


@pytest.fixture(scope="module")
def narrow(local_sfn: LocalStepFunctions, tiny_model_dir: Path) -> FanoutStack:
    """Reserved concurrency for one fan-out's shards and nothing more."""
    return make_stack(local_sfn, tiny_model_dir, "diarization.handler.lambda_handler", reserved_concurrency=SHARDS)


@pytest.fixture(scope="module")
def faulty(
    local_sfn: LocalStepFunctions, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> FanoutStack:
    return make_stack(
        local_sfn, tiny_model_dir, "support.fanout_faults.lambda_handler", tmp_path_factory.mktemp("faults")
    )


@pytest.fixture()
def fault(faulty: FanoutStack) -> Iterator[Any]:
    """Set the fault for this test (``once:1``, ``always:1``); cleared afterwards."""
    assert faulty.fault_dir is not None
    mode = faulty.fault_dir / "mode"
    yield mode.write_text
    mode.unlink(missing_ok=True)


def events_for(deployment: Deployment, key: str) -> list[str]:
    """The completion events about one input (the module's tests share the event bus)."""
    uri = f"s3://{deployment.bucket}/{key}"
    return [e["detail-type"] for e in deployment.captured_events() if e["detail"]["input"] == uri]


def shard_calls(function: LocalFunction, execution: str) -> list[tuple[int, bool]]:
    """(index, errored) of every shard invocation of one execution, in the order they ended."""
    return [
        (call["event"]["fanout"]["index"], call["errored"])
        for call in function.invocations
        if call["event"]["fanout"].get("step") == "shard" and call["event"]["fanout"]["execution"] == execution
    ]


def test_an_upload_fans_out_into_shards_and_equals_the_single_run(
    stack: FanoutStack, encoded_samples: dict[str, Path]
) -> None:
    deployment = stack.deployment
    audio = encoded_samples["wav"].read_bytes()
    job_id, key = stack.new_job("meeting.wav")
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=audio)
    stack.deliver()
    assert stack.job(stack.app, job_id)["status"] == "running"

    execution = stack.run_of(job_id)
    described = stack.finished(execution)
    assert described["status"] == "SUCCEEDED", described
    assert sorted(shard_calls(stack.function, execution)) == [(index, False) for index in range(SHARDS)]
    name = key.removeprefix("audio/")
    assert deployment.object_keys(f"results/{name}") == [f"results/{name}.json", f"results/{name}.rttm"]
    fanned = deployment.get_json(f"results/{name}.json")
    jsonschema.validate(fanned, load_schema())
    assert fanned["input"]["uri"] == f"s3://{deployment.bucket}/{key}"
    done = stack.job(stack.app, job_id)
    assert done["status"] == "succeeded" and done["speaker_count"] == len(fanned["speakers"])
    work = sorted(o["Key"] for o in deployment.s3.list_objects_v2(Bucket=stack.work_bucket)["Contents"])
    assert work == [
        f"{execution}/{relative}"
        for relative in ("audio.f32", "audio.json", "result.json", *(f"shards/{i:05d}.npz" for i in range(SHARDS)))
    ]

    # The same file in one process, same pipeline and batch sizes: the same answer.
    reference = stack.app.diarizer.diarize(audio, input_uri=fanned["input"]["uri"]).to_dict()
    assert fanned["segments"] == reference["segments"]
    assert fanned["exclusive_segments"] == reference["exclusive_segments"]
    assert fanned["speakers"] == reference["speakers"]
    assert fanned["warnings"] == reference["warnings"] and fanned["model"] == reference["model"]
    rttm = deployment.s3.get_object(Bucket=deployment.bucket, Key=f"results/{name}.rttm")["Body"].read().decode()
    assert rttm.count("SPEAKER ") == len(reference["segments"])
    assert events_for(deployment, key) == ["Diarization Succeeded"]
    assert_invariant(deployment)


def test_a_shard_that_crashes_once_is_retried(
    faulty: FanoutStack, fault: Any, encoded_samples: dict[str, Path]
) -> None:
    fault("once:1")
    job_id, key = faulty.new_job("retried.wav")
    faulty.deployment.s3.put_object(Bucket=faulty.deployment.bucket, Key=key, Body=encoded_samples["wav"].read_bytes())
    faulty.deliver()

    execution = faulty.run_of(job_id)
    assert faulty.finished(execution)["status"] == "SUCCEEDED"
    calls = shard_calls(faulty.function, execution)
    assert calls.count((1, True)) == 1 and calls.count((1, False)) == 1, calls
    (crash,) = [
        c["answer"]
        for c in faulty.function.invocations
        if c["errored"] and c["event"]["fanout"]["execution"] == execution
    ]
    assert crash["errorType"] == "Lambda.Unknown" and "signal: killed" in crash["errorMessage"]
    assert faulty.job(faulty.app, job_id)["status"] == "succeeded"
    name = key.removeprefix("audio/")
    assert faulty.deployment.object_keys(f"results/{name}") == [f"results/{name}.json", f"results/{name}.rttm"]
    assert_invariant(faulty.deployment)


def test_a_shard_that_always_crashes_fails_the_job_with_the_error_object(
    faulty: FanoutStack, fault: Any, encoded_samples: dict[str, Path]
) -> None:
    fault("always:1")
    deployment = faulty.deployment
    job_id, key = faulty.new_job("doomed.wav")
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["wav"].read_bytes())
    faulty.deliver()

    execution = faulty.run_of(job_id)
    described = faulty.finished(execution)
    assert described["status"] == "FAILED" and described.get("error") == "FanoutFailed", described
    assert shard_calls(faulty.function, execution).count((1, True)) == 3  # the first attempt and 2 retries
    name = key.removeprefix("audio/")
    assert deployment.object_keys(f"results/{name}") == [f"results/{name}.error.json"]
    body = deployment.get_json(f"results/{name}.error.json")
    jsonschema.validate(body, load_schema("error-v1.json"))
    assert body["error"]["code"] == "FANOUT_FAILED"
    assert body["error"]["details"] == {"execution": execution, "step_error": "Lambda.Unknown"}
    assert "signal: killed" in body["error"]["message"]
    job = faulty.job(faulty.app, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "FANOUT_FAILED"
    failure = deployment.s3.get_object(Bucket=faulty.work_bucket, Key=f"{execution}/failure.json")
    assert b"FANOUT_FAILED" in failure["Body"].read()
    keys = [o["Key"] for o in deployment.s3.list_objects_v2(Bucket=faulty.work_bucket, Prefix=execution)["Contents"]]
    assert f"{execution}/result.json" not in keys
    assert events_for(deployment, key) == ["Diarization Failed"]
    assert_invariant(deployment)


def test_two_fanouts_with_room_for_one_queue_and_both_succeed(
    narrow: FanoutStack, encoded_samples: dict[str, Path]
) -> None:
    """The second run's steps are throttled as Lambda throttles (HTTP 429 TooManyRequestsException from Invoke while
    the reserved concurrency is in use), retried with the definition's backoff, and both runs end with their result."""
    deployment = narrow.deployment
    jobs = [narrow.new_job(f"together-{n}.wav") for n in range(2)]
    for _, key in jobs:
        deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["wav"].read_bytes())
    narrow.deliver(expected=2)

    executions = [narrow.run_of(job_id) for job_id, _ in jobs]
    for (job_id, key), execution in zip(jobs, executions, strict=True):
        assert narrow.finished(execution)["status"] == "SUCCEEDED"
        assert sorted(shard_calls(narrow.function, execution)) == [(index, False) for index in range(SHARDS)]
        assert narrow.job(narrow.app, job_id)["status"] == "succeeded"
        name = key.removeprefix("audio/")
        assert deployment.object_keys(f"results/{name}") == [f"results/{name}.json", f"results/{name}.rttm"]
    events = deployment.captured_events()  # once: receiving hides what was received
    for _, key in jobs:
        uri = f"s3://{deployment.bucket}/{key}"
        assert [e["detail-type"] for e in events if e["detail"]["input"] == uri] == ["Diarization Succeeded"]
    assert narrow.function.throttled, "the runs overlapped, so some step had to wait for concurrency"
    failures = [
        event["taskFailedEventDetails"]["error"]
        for execution in executions
        for event in narrow.history(execution)
        if event["type"] == "TaskFailed"
    ]
    assert failures and set(failures) == {"Lambda.TooManyRequestsException"}  # waited in the definition's Retry
    assert {event["fanout"]["execution"] for event in narrow.function.throttled} <= set(executions)
    assert_invariant(deployment)


def test_the_same_run_delivered_twice_is_one_execution(stack: FanoutStack, tmp_path: Path) -> None:
    """Once through the idempotent path (the stored outcome is replayed), once without idempotency (the run stages
    and starts again: Step Functions refuses the name, which means it has started)."""
    deployment = stack.deployment
    audio = encode_as(speech_like(30.0, seed=5), 16_000, tmp_path, "flac").read_bytes()
    key = "audio/twice.flac"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=audio)
    before = {e["name"] for e in stack.executions()}
    (message,) = stack.deliver()
    event = deployment.sqs_event([message])
    assert stack.app.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    no_idempotency = FunctionApp({**stack.env, "IDEMPOTENCY_TABLE": ""})
    assert no_idempotency.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    (execution,) = [e for e in stack.executions() if e["name"] not in before]
    assert stack.finished(execution["name"])["status"] == "SUCCEEDED"
    assert no_idempotency.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}  # after it ended
    assert len(stack.executions()) == len(before) + 1
    assert deployment.object_keys("results/twice.flac") == ["results/twice.flac.json", "results/twice.flac.rttm"]
    assert events_for(deployment, key) == ["Diarization Succeeded"]


def test_a_late_older_version_never_replaces_the_newer_ones_result(stack: FanoutStack, tmp_path: Path) -> None:
    """Versions 1 and 2 of one key; 2 is fanned out and published first, then 1's event arrives. Version 1 is
    diarized (its decode was staged) but its completion is ordered as version 1, not as whatever is current, so the
    outputs keep describing version 2."""
    deployment = stack.deployment
    key = "audio/versions.flac"
    first = encode_as(speech_like(30.0, seed=6), 16_000, tmp_path, "flac", stem="v1").read_bytes()
    second = encode_as(speech_like(36.0, seed=7), 16_000, tmp_path, "flac", stem="v2").read_bytes()
    sent = []
    for body, sequencer in ((first, "0065A1B2C3D4E5F601"), (second, "0065A1B2C3D4E5F602")):
        put = deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=body)
        received = deployment.notifications(1)
        for message in received:
            deployment.sqs.delete_message(QueueUrl=deployment.queue_url, ReceiptHandle=message["ReceiptHandle"])
        sent += as_s3_sends(received, versionId=put["VersionId"], sequencer=sequencer)
    messages = list(reversed(sent))  # the newer version's event first
    published = []
    for message in messages:
        before = {e["name"] for e in stack.executions()}
        outcome = stack.app.lambda_handler(deployment.sqs_event([message]), LambdaContext())
        assert outcome == {"batchItemFailures": []}
        (execution,) = [e for e in stack.executions() if e["name"] not in before]
        described = stack.finished(execution["name"])
        assert described["status"] == "SUCCEEDED"
        published.append(json.loads(described["output"])["outcome"]["status"])
        result = deployment.get_json("results/versions.flac.json")
        assert result["input"]["size_bytes"] == len(second)
        assert result["audio"]["duration_seconds"] == pytest.approx(36.0, abs=0.1)
    assert published == ["succeeded", "skipped"]  # version 1's result was computed, and not written
    assert_invariant(deployment)


def test_a_forged_step_is_refused_and_writes_nothing(stack: FanoutStack) -> None:
    """A step for an execution this deployment never fanned out, or for a GPU routing: refused before any read or
    write, whichever step it names."""
    deployment = stack.deployment
    jobs = DynamoJobStore(deployment.jobs_table, 1)
    jobs.record_routing(Routing("f" * 32, ObjectRef(deployment.bucket, "audio/gpu.wav"), None, None))
    before = (deployment.object_keys(), boto3.client("s3").list_objects_v2(Bucket=stack.work_bucket).get("KeyCount"))
    for name in ("0" * 32, "f" * 32, "../" * 5, 42):
        for step in ("plan", "shard", "reduce", "publish", "fail"):
            event = {"fanout": {"step": step, "execution": name, "index": 0, "error": {"Error": "X", "Cause": "y"}}}
            with pytest.raises(InvalidRequestError, match="not fanned out by this deployment"):
                stack.app.lambda_handler(event, LambdaContext())
    after = (deployment.object_keys(), boto3.client("s3").list_objects_v2(Bucket=stack.work_bucket).get("KeyCount"))
    assert after == before
    with pytest.raises(InvalidRequestError, match="Unknown fan-out step"):
        stack.app.lambda_handler({"fanout": {"step": "delete", "execution": "0" * 32}}, LambdaContext())
    without = FunctionApp({**stack.env, "FANOUT_STATE_MACHINE_ARN": "", "FANOUT_WORK_BUCKET": ""})
    with pytest.raises(ConfigurationError, match="FANOUT_STATE_MACHINE_ARN is not set"):
        without.lambda_handler({"fanout": {"step": "plan", "execution": "0" * 32}}, LambdaContext())


def test_staged_audio_is_uploaded_in_parts_and_read_by_range(stack: FanoutStack) -> None:
    """12 MB of samples: boto3's managed transfer uploads them in 8 MiB parts from the array itself; a shard's ranged
    GET returns exactly its samples, and a range past the end is an error, not a short shard."""
    samples = np.arange(3_000_000, dtype="<f4")
    store = S3Store()
    store.put_stream(stack.work_bucket, "parts/audio.f32", io.BufferedReader(ArrayReader(samples)), "x/y")
    head = boto3.client("s3").head_object(Bucket=stack.work_bucket, Key="parts/audio.f32")
    assert head["ContentLength"] == samples.nbytes and head["ETag"].strip('"').endswith("-2")  # two parts
    piece = store.get_range(stack.work_bucket, "parts/audio.f32", 4 * 1_234_567, 4 * 2_345_678)
    assert np.array_equal(np.frombuffer(piece, dtype="<f4"), samples[1_234_567:2_345_678])
    with pytest.raises(ValueError, match="returned"):
        store.get_range(stack.work_bucket, "parts/audio.f32", samples.nbytes - 8, samples.nbytes + 8)
