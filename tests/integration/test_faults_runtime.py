"""Failures that escape the handler: a timeout, an out-of-memory kill, a crash between the result write and the job
update, and a throttled batch.

The first three run under the real runtime loop (the Lambda Runtime Interface Emulator around awslambdaric), because
what matters is what the process leaves behind when it is killed: no answer, no cleanup, an idempotency record still
"in progress". Lambda's SQS event source mapping is played by hand over moto's SQS (:class:`EventSourceMapping`):
receive a batch, invoke, delete what the function acknowledged; a function error deletes nothing, so the batch comes
back after the visibility timeout (1 s here), and moto's redrive policy moves a message to the dead-letter queue
after maxReceiveCount (3) receives. The DLQ's own mapping then invokes the consumer. A throttled batch never reaches
the function at all, so that scenario drives the consumer in-process (FunctionApp), as do the two crash variants that
need no kill to be faithful. After each scenario the invariant of tests/test_faults.py is checked.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_faults import assert_invariant, jobs_of, make_app

from diarization.aws_ports.dynamodb_jobs import DynamoJobStore
from diarization.service.jobs import new_job_id
from infra.local_aws import Deployment, LambdaContext, create_deployment
from infra.runtime_emulator import ROOT, Emulator

Invoke = Callable[[dict[str, Any]], tuple[int, Any]]
VISIBILITY_SECONDS = 1
MAX_RECEIVE_COUNT = 3
"""create_deployment's redrive policy (the template's is higher; the mechanics are the same)."""
KILLED_RECEIVE_COUNT = 2
"""For the timeout, where every delivery costs a whole timeout."""
TIMEOUT_SECONDS = 30
"""Longer than the function's init (4 s on a quiet machine, up to 17.5 s measured under load): the emulator bounds
the init by the same timeout."""


class EventSourceMapping:
    """Lambda's SQS poller for one queue: receive, invoke with the batch, delete what the function acknowledged."""

    def __init__(self, deployment: Deployment, queue_url: str) -> None:
        self.deployment, self.queue_url = deployment, queue_url
        attributes = deployment.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        self.arn = attributes["Attributes"]["QueueArn"]

    def receive(self) -> list[dict[str, Any]]:
        """Waits longer than the visibility timeout, so a batch the function failed is seen again."""
        response = self.deployment.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=VISIBILITY_SECONDS + 1,
            AttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        event = self.deployment.sqs_event(messages)
        for record, message in zip(event["Records"], messages, strict=True):
            count = message["Attributes"]["ApproximateReceiveCount"]
            record.update(eventSourceARN=self.arn, attributes={"ApproximateReceiveCount": count})
        return event

    def run(self, invoke: Invoke, max_batches: int = 10) -> list[tuple[int, Any]]:
        """Every batch until nothing is left to receive (deleted, or moved to the dead-letter queue); the answers."""
        answers: list[tuple[int, Any]] = []
        for _ in range(max_batches):
            messages = self.receive()
            if not messages:
                return answers
            status, answer = invoke(self.event(messages))
            answers.append((status, answer))
            if status == 200 and isinstance(answer, dict) and "batchItemFailures" in answer:
                failed = {item["itemIdentifier"] for item in answer["batchItemFailures"]}
                for message in messages:
                    if message["MessageId"] not in failed:
                        self.deployment.sqs.delete_message(
                            QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                        )
        raise AssertionError(f"still receiving after {max_batches} batches: {answers}")


def acknowledged(answer: tuple[int, Any]) -> bool:
    status, body = answer
    return status == 200 and isinstance(body, dict) and body.get("batchItemFailures") == []


@pytest.fixture()
def deployment(moto_endpoint: str) -> Deployment:
    deployment = create_deployment()
    deployment.sqs.set_queue_attributes(
        QueueUrl=deployment.queue_url, Attributes={"VisibilityTimeout": str(VISIBILITY_SECONDS)}
    )
    return deployment


def queued_job(deployment: Deployment, key: str, data: bytes) -> str:
    """An uploaded object with a job for it, and the job's message on the work queue (as POST /jobs leaves them);
    the upload's own notification is consumed first, so the job's message is the only work."""
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=data)
    for message in deployment.notifications(1):
        deployment.sqs.delete_message(QueueUrl=deployment.queue_url, ReceiptHandle=message["ReceiptHandle"])
    job_id = new_job_id()
    DynamoJobStore(deployment.jobs_table, 1).create(
        job_id, owner="anonymous", input=f"s3://{deployment.bucket}/{key}", hints={}
    )
    body = {"job_id": job_id, "bucket": deployment.bucket, "key": key}
    deployment.sqs.send_message(QueueUrl=deployment.queue_url, MessageBody=json.dumps(body))
    return job_id


def dead_letter_after(deployment: Deployment, receives: int) -> None:
    attributes = deployment.sqs.get_queue_attributes(QueueUrl=deployment.queue_url, AttributeNames=["RedrivePolicy"])
    policy = {**json.loads(attributes["Attributes"]["RedrivePolicy"]), "maxReceiveCount": str(receives)}
    deployment.sqs.set_queue_attributes(QueueUrl=deployment.queue_url, Attributes={"RedrivePolicy": json.dumps(policy)})


def job(deployment: Deployment, job_id: str) -> dict[str, Any]:
    found = DynamoJobStore(deployment.jobs_table, 1).get(job_id)
    assert found is not None
    return found


def function_env(deployment: Deployment, model_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        **deployment.env,
        "MODEL_DIR": str(model_dir),
        "NUM_THREADS": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "function"), str(ROOT / "tests")]),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": "300",
        **extra,
    }


@pytest.fixture()
def emulators(tmp_path: Path) -> Iterator[Callable[[dict[str, str], str], Emulator]]:
    started: list[Emulator] = []

    def start(env: dict[str, str], handler: str) -> Emulator:
        emulator = Emulator(env, [sys.executable, "-m", "awslambdaric", handler])
        emulator.start(tmp_path / f"function-{len(started)}.log")
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


def assert_dead_lettered_job_failed(deployment: Deployment, job_id: str, key: str) -> None:
    name = key.removeprefix("audio/")
    ended = job(deployment, job_id)
    assert ended["status"] == "failed", ended
    error = ended["outcome"]["error"]
    assert error["code"] == "INTERNAL_ERROR" and error["details"]["deliveries"] >= KILLED_RECEIVE_COUNT, error
    assert error["location"] == f"s3://{deployment.bucket}/results/{name}.error.json"
    assert deployment.object_keys("results/") == [f"results/{name}.error.json"]
    error_object = deployment.get_json(f"results/{name}.error.json")
    assert error_object["error"]["code"] == "INTERNAL_ERROR" and "timed out" in error_object["error"]["message"]
    assert deployment.receive(wait=0) == [] and deployment.receive(deployment.dlq_url, wait=0) == []
    assert_invariant(deployment)


def test_a_timeout_is_retried_then_dead_lettered_and_its_job_fails(
    deployment: Deployment,
    emulators: Callable[[dict[str, str], str], Emulator],
    tiny_model_dir: Path,
    encoded_samples: dict[str, Path],
) -> None:
    """A 30 s function timeout and diarization that does not end (the tiny pipeline is too fast to outlast a timeout
    long enough for the init, which the emulator bounds by the same timeout; a sleep in the diarize step stands in
    for long work). The speed estimate is set far too optimistic, so the deadline guard lets the work start — a wrong
    estimate is how a real timeout happens. The emulator kills the runtime at the timeout; the redelivery re-runs the
    init inside the invocation (a "suppressed init", as Lambda does after a timeout) and times out again. The DLQ
    consumer is the same function in a sandbox of its own, with the usual timeout."""
    key = "audio/long.wav"
    job_id = queued_job(deployment, key, encoded_samples["wav"].read_bytes())
    dead_letter_after(deployment, KILLED_RECEIVE_COUNT)
    worker_env = function_env(
        deployment,
        tiny_model_dir,
        FAULT="slow_diarizing",
        AWS_LAMBDA_FUNCTION_TIMEOUT=str(TIMEOUT_SECONDS),
        EXPECTED_REAL_TIME_FACTOR="0.001",
        DEADLINE_MARGIN_SECONDS="0",
    )
    worker = emulators(worker_env, "support.runtime_faults.lambda_handler")
    consumer = emulators(function_env(deployment, tiny_model_dir), "diarization.handler.lambda_handler")

    answers = EventSourceMapping(deployment, deployment.queue_url).run(worker.invoke)

    assert answers == [(200, f"Task timed out after {TIMEOUT_SECONDS}.00 seconds")] * KILLED_RECEIVE_COUNT, answers
    assert job(deployment, job_id)["status"] == "running", worker.logs()[-3000:]  # the work had started
    assert deployment.object_keys("results/") == []
    dead = EventSourceMapping(deployment, deployment.dlq_url).run(consumer.invoke)
    assert dead == [(200, {"batchItemFailures": []})], consumer.logs()[-3000:]
    assert_dead_lettered_job_failed(deployment, job_id, key)


def test_an_out_of_memory_kill_is_retried_then_dead_lettered_and_its_job_fails(
    deployment: Deployment,
    emulators: Callable[[dict[str, str], str], Emulator],
    tiny_model_dir: Path,
    encoded_samples: dict[str, Path],
) -> None:
    """A stand-in: Lambda ends a sandbox that exceeds its memory with SIGKILL (the runtime reports "signal:
    killed"). The emulator enforces no memory limit, and an RLIMIT_AS would turn the allocation into a Python
    MemoryError, which the handler would catch and answer: a different path. So the runtime sends itself the
    kernel's SIGKILL where the memory would peak (diarizing); the process, the emulator and SQS see what they see
    after a real out-of-memory kill."""
    key = "audio/oom.wav"
    job_id = queued_job(deployment, key, encoded_samples["wav"].read_bytes())
    function = emulators(
        function_env(deployment, tiny_model_dir, FAULT="killed_while_diarizing"),
        "support.runtime_faults.lambda_handler",
    )

    answers = EventSourceMapping(deployment, deployment.queue_url).run(function.invoke)

    status, body = answers[0]
    assert status == 502 and body["errorType"] == "Runtime.ExitError" and "signal: killed" in body["errorMessage"]
    # The redeliveries find the killed run's idempotency record still "in progress" and fail too.
    assert len(answers) == MAX_RECEIVE_COUNT and not any(acknowledged(answer) for answer in answers), answers
    dead = EventSourceMapping(deployment, deployment.dlq_url).run(function.invoke)
    assert dead == [(200, {"batchItemFailures": []})], function.logs()[-3000:]
    assert_dead_lettered_job_failed(deployment, job_id, key)


def test_a_crash_between_the_result_write_and_the_job_update_keeps_the_success(
    deployment: Deployment,
    emulators: Callable[[dict[str, str], str], Emulator],
    tiny_model_dir: Path,
    encoded_samples: dict[str, Path],
) -> None:
    """The process dies after the result, the RTTM and the completion event are written, before the idempotency
    record is saved and before the job is ended. Each redelivery finds the first run still "in progress" (its
    record expires with the invocation's timeout, 300 s) and fails; the message is dead-lettered; the consumer
    finds this version's success in the ordering record and ends the job with it."""
    key = "audio/crash.wav"
    job_id = queued_job(deployment, key, encoded_samples["wav"].read_bytes())
    function = emulators(
        function_env(deployment, tiny_model_dir, FAULT="killed_after_publishing"),
        "support.runtime_faults.lambda_handler",
    )

    answers = EventSourceMapping(deployment, deployment.queue_url).run(function.invoke)

    assert answers[0][0] == 502 and answers[0][1]["errorType"] == "Runtime.ExitError", answers
    assert len(answers) == MAX_RECEIVE_COUNT and not any(acknowledged(answer) for answer in answers), answers
    assert "IdempotencyAlreadyInProgressError" in function.logs()
    written = deployment.get_json("results/crash.wav.json")
    dead = EventSourceMapping(deployment, deployment.dlq_url).run(function.invoke)
    assert dead == [(200, {"batchItemFailures": []})], function.logs()[-3000:]

    ended = job(deployment, job_id)
    assert ended["status"] == "succeeded", ended
    assert ended["outcome"]["speaker_count"] == written["speaker_count"]
    assert ended["outcome"]["output"]["json"] == f"s3://{deployment.bucket}/results/crash.wav.json"
    assert deployment.object_keys("results/") == ["results/crash.wav.json", "results/crash.wav.rttm"]
    assert deployment.get_json("results/crash.wav.json") == written
    assert [event["detail-type"] for event in deployment.captured_events()] == ["Diarization Succeeded"]
    assert_invariant(deployment)


class ProcessDied(BaseException):
    """A kill, in-process: not an Exception, so neither Powertools' idempotency (which deletes its in-progress
    record on an exception) nor the batch processor sees it, as neither would see a SIGKILL."""


class DiesOnce:
    """Wraps one port method: the first call runs `before` (if given) and then the process "dies"."""

    def __init__(self, method: Callable[..., Any], run_first: bool) -> None:
        self.method, self.run_first, self.died = method, run_first, False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.died:
            return self.method(*args, **kwargs)
        self.died = True
        if self.run_first:
            self.method(*args, **kwargs)
        raise ProcessDied


def test_a_crash_after_the_idempotency_record_is_saved_is_finished_by_the_redelivery(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """The run's outcome is stored, the job not yet ended: the redelivery replays the outcome and ends the job."""
    app = make_app(deployment, tiny_model_dir, tmp_path)
    job_id = queued_job(deployment, "audio/replay.wav", encoded_samples["wav"].read_bytes())
    jobs = app.diarize_object.jobs
    assert jobs is not None
    jobs.finish = DiesOnce(jobs.finish, run_first=False)  # type: ignore[method-assign]
    mapping = EventSourceMapping(deployment, deployment.queue_url)

    def invoke(event: dict[str, Any]) -> tuple[int, Any]:
        try:
            return 200, app.lambda_handler(event, LambdaContext())
        except ProcessDied:
            return 502, {"errorType": "Runtime.ExitError"}

    answers = mapping.run(invoke)

    assert [status for status, _ in answers] == [502, 200] and acknowledged(answers[1]), answers
    assert job(deployment, job_id)["status"] == "succeeded"
    assert len(deployment.captured_events()) == 1  # the replay publishes nothing again
    assert_invariant(deployment)


def test_a_crash_before_the_idempotency_record_is_saved_is_run_again_after_the_timeout(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """With a visibility timeout at least the function's (as the template sets it), the redelivery comes after the
    first run's in-progress record has expired: the same version runs again and writes the same result once more."""
    app = make_app(deployment, tiny_model_dir, tmp_path, EXPECTED_REAL_TIME_FACTOR="0.001", DEADLINE_MARGIN_SECONDS="0")
    job_id = queued_job(deployment, "audio/again.wav", encoded_samples["wav"].read_bytes())
    notifier = app.diarize_object.publisher.notifier
    assert notifier is not None
    notifier.publish = DiesOnce(notifier.publish, run_first=True)  # type: ignore[method-assign]
    timeout_seconds = 5.0
    killed_at: list[float] = []

    def invoke(event: dict[str, Any]) -> tuple[int, Any]:
        if killed_at:  # SQS hands the message out again only after the function's timeout
            time.sleep(max(0.0, killed_at[0] + timeout_seconds - time.monotonic()))
        try:
            return 200, app.lambda_handler(event, LambdaContext(remaining_seconds=timeout_seconds))
        except ProcessDied:
            killed_at.append(time.monotonic())
            return 502, {"errorType": "Runtime.ExitError"}

    answers = EventSourceMapping(deployment, deployment.queue_url).run(invoke)

    assert [status for status, _ in answers] == [502, 200] and acknowledged(answers[1]), answers
    ended = job(deployment, job_id)
    assert ended["status"] == "succeeded", ended
    assert deployment.object_keys("results/") == ["results/again.wav.json", "results/again.wav.rttm"]
    assert_invariant(deployment)


def test_a_throttled_batch_is_dead_lettered_and_given_up_on_but_a_success_stays(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """Throttled: the poller receives the messages but the function has no concurrency left, so they return to the
    queue unprocessed until their receive count passes maxReceiveCount. One object's job was never run (it gets an
    error object and fails); the other's duplicate notification was, through its twin, already a success (it
    stays, with no second event)."""
    app = make_app(deployment, tiny_model_dir, tmp_path)
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/done.ogg", Body=encoded_samples["ogg"].read_bytes())
    received = deployment.notifications(1)  # with the s3:TestEvent the bucket's notification setup sent
    (notification,) = [m for m in received if '"Records"' in m["Body"]]
    assert app.lambda_handler(deployment.sqs_event([notification]), LambdaContext()) == {"batchItemFailures": []}
    for message in received:
        deployment.sqs.delete_message(QueueUrl=deployment.queue_url, ReceiptHandle=message["ReceiptHandle"])
    job_id = queued_job(deployment, "audio/starved.wav", encoded_samples["wav"].read_bytes())
    deployment.sqs.send_message(QueueUrl=deployment.queue_url, MessageBody=notification["Body"])  # S3's duplicate
    result_before = deployment.s3.head_object(Bucket=deployment.bucket, Key="results/done.ogg.json")["ETag"]
    assert len(deployment.captured_events()) == 1
    counts: dict[str, list[int]] = {}

    def throttled(event: dict[str, Any]) -> tuple[int, Any]:
        for record in event["Records"]:
            counts.setdefault(record["messageId"], []).append(int(record["attributes"]["ApproximateReceiveCount"]))
        return 429, {"errorType": "TooManyRequestsException"}  # never reaches the function

    EventSourceMapping(deployment, deployment.queue_url).run(throttled)
    assert list(counts.values()) == [[1, 2, 3], [1, 2, 3]]  # each receive count rises, nothing processed

    dead = EventSourceMapping(deployment, deployment.dlq_url).run(
        lambda event: (200, app.lambda_handler(event, LambdaContext()))
    )

    assert dead == [(200, {"batchItemFailures": []})]
    starved = job(deployment, job_id)
    assert starved["status"] == "failed" and starved["outcome"]["error"]["code"] == "INTERNAL_ERROR"
    assert deployment.object_keys("results/") == [
        "results/done.ogg.json",
        "results/done.ogg.rttm",
        "results/starved.wav.error.json",
    ]
    assert deployment.s3.head_object(Bucket=deployment.bucket, Key="results/done.ogg.json")["ETag"] == result_before
    assert [event["detail-type"] for event in deployment.captured_events()] == ["Diarization Failed"]
    assert {status["status"]["S"] for status in jobs_of(deployment).values()} == {"failed"}
    assert_invariant(deployment)
