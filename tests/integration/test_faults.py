"""Fault injection against moto server over HTTP: duplicates, late and reordered reports, shared GPU inferences.

After each scenario the invariant is checked: for every input object exactly one of {result, error object}
exists and it describes the newest version; every job is terminal, or running while its work is in flight.
"""

from __future__ import annotations

import datetime
import json
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from test_api import ALICE, BOB, call, post_upload, process_queue
from test_lambda import make_app

from diarization.aws.app import FunctionApp
from diarization.aws_ports.dynamodb_jobs import DynamoJobStore
from diarization.core.hints import SpeakerHints
from diarization.core.voiceprints import Voiceprint
from diarization.service.locations import ObjectRef
from infra.local_aws import Deployment, LambdaContext, create_deployment

TERMINAL = ("succeeded", "failed")


@pytest.fixture()
def deployment(moto_endpoint: str) -> Deployment:
    return create_deployment()


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


def gpu_result(app: FunctionApp, deployment: Deployment, key: str, audio: Path, inference_id: str) -> str:
    """What the endpoint would have written for `key`: a schema v1 result in the output location that
    InvokeEndpointAsync gave when the inference was routed (moto's: a bucket of its own)."""
    result = app.diarizer.diarize(audio, SpeakerHints(), f"s3://{deployment.bucket}/{key}").to_dict()
    routing = DynamoJobStore(deployment.jobs_table, 1).routing(inference_id)
    assert routing is not None and routing.output_location
    bucket, _, output_key = routing.output_location.removeprefix("s3://").partition("/")
    deployment.s3.put_object(Bucket=bucket, Key=output_key, Body=json.dumps(result))
    return routing.output_location


def gpu_completes(app: FunctionApp, deployment: Deployment, key: str, audio: Path, inference_id: str) -> dict[str, Any]:
    """The endpoint writes its result for `key` and reports Completed: the function's one outcome for that report."""
    output = gpu_result(app, deployment, key, audio, inference_id)
    (outcome,) = app.lambda_handler(completion(deployment, key, inference_id, "Completed", output), LambdaContext())[
        "outcomes"
    ]
    return dict(outcome)


def inference_of(deployment: Deployment, job_id: str) -> str:
    """The id of the GPU inference (or fan-out execution) a job's run was routed as: the job's id and its version's."""
    items = boto3.client("dynamodb").scan(TableName=deployment.jobs_table)["Items"]
    prefix = f"inference-{job_id}"
    (name,) = [item["job_id"]["S"] for item in items if item["job_id"]["S"].startswith(prefix)]
    return name.removeprefix("inference-")


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
    jobs = DynamoJobStore(deployment.jobs_table, 1)
    jobs.create("a" * 32, owner="anonymous")
    run = ObjectRef(deployment.bucket, "audio/a.wav", None, "e1")
    assert jobs.mark_running("a" * 32, run)
    assert jobs.finish("a" * 32, {"status": "succeeded", "speaker_count": 2})
    assert not jobs.finish("a" * 32, {"status": "failed", "error": {"code": "GPU_INFERENCE_FAILED"}})
    assert not jobs.mark_running("a" * 32, run)
    job = jobs.get("a" * 32)
    assert job is not None and job["status"] == "succeeded" and job["outcome"]["speaker_count"] == 2


def test_a_job_starts_on_one_run(deployment: Deployment) -> None:
    """mark_running's condition: the first start records the job's run (its input and version); the same run starts
    it again (a redelivery; or by its input alone when its object can no longer be read), and no other input or
    version does, whichever arrives second: one conditional write decides."""
    jobs = DynamoJobStore(deployment.jobs_table, 1)
    job_id = "c" * 32
    jobs.create(job_id, owner="anonymous", upload=True)
    first = ObjectRef(deployment.bucket, f"audio/uploads/{job_id}/a.wav", "v1", "e1")
    other = replace(first, key=f"audio/uploads/{job_id}/b.wav")
    assert jobs.mark_running(job_id, first)
    assert jobs.mark_running(job_id, first)
    assert jobs.mark_running(job_id, replace(first, version_id=None, etag=None))
    for refused in (replace(first, version_id="v2", etag="e2"), other, replace(other, version_id=None, etag=None)):
        assert not jobs.mark_running(job_id, refused), refused
    job = jobs.get(job_id)
    assert job is not None and job["status"] == "running"
    assert (job["run_input"], job["run_version"]) == (first.uri, "v1")
    unversioned = "d" * 32  # a bucket without versioning: the ETag is the version
    jobs.create(unversioned, owner="anonymous", upload=True)
    assert jobs.mark_running(unversioned, replace(first, version_id=None))
    assert not jobs.mark_running(unversioned, replace(first, version_id=None, etag="e2"))
    assert jobs.finish(unversioned, {"status": "succeeded"})
    assert not jobs.mark_running(unversioned, replace(first, version_id=None))  # and once ended, nothing starts it


def deliver(app: FunctionApp, deployment: Deployment) -> None:
    """One upload's notification, handled and deleted as Lambda's SQS poller would."""
    messages = [m for m in deployment.notifications(1) if '"Records"' in m["Body"]]
    assert app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
    for message in messages:
        deployment.sqs.delete_message(QueueUrl=deployment.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.mark.parametrize("second", ["another-name", "same-name"])
def test_a_second_upload_while_its_job_runs_is_refused_and_the_first_run_ends_the_job(
    gpu_app: FunctionApp, deployment: Deployment, encoded_samples: dict[str, Path], second: str
) -> None:
    """The job's upload is on the GPU when a second file lands in its folder (another name, or the form used again).
    Before, the second run took the job's inference id and rewrote its routing: the first report was refused as
    untrusted (another name: the first file never got a result or an error object) or published as the second file.
    Now the second file gets a JOB_ALREADY_STARTED error object, and the first run's report ends the job: its result,
    or skipped as superseded when the refused file replaced the job's own."""
    job = call(gpu_app, "POST", "/jobs", {"upload": True, "filename": "first.flac"})[1]
    first = job["input"].removeprefix(f"s3://{deployment.bucket}/")
    deployment.s3.put_object(Bucket=deployment.bucket, Key=first, Body=encoded_samples["flac"].read_bytes())
    deliver(gpu_app, deployment)
    assert call(gpu_app, "GET", job["status_url"])[1]["status"] == "running"
    inference = inference_of(deployment, job["job_id"])
    routed = DynamoJobStore(deployment.jobs_table, 1).routing(inference)
    later = first.replace("first.flac", "second.wav") if second == "another-name" else first
    deployment.s3.put_object(Bucket=deployment.bucket, Key=later, Body=encoded_samples["wav"].read_bytes())

    deliver(gpu_app, deployment)

    refused = deployment.get_json(f"results/{later.removeprefix('audio/')}.error.json")
    assert refused["error"]["code"] == "JOB_ALREADY_STARTED", refused
    assert refused["error"]["details"]["run_input"] == job["input"]
    assert DynamoJobStore(deployment.jobs_table, 1).routing(inference) == routed  # the first run's, untouched
    assert call(gpu_app, "GET", job["status_url"])[1]["status"] == "running"
    done = gpu_completes(gpu_app, deployment, first, encoded_samples["flac"], inference)

    ended = call(gpu_app, "GET", job["status_url"])[1]
    if second == "another-name":
        assert done["status"] == "succeeded" and ended["status"] == "succeeded"
    else:
        assert done["status"] == "skipped" and ended["error"]["code"] == "INPUT_CHANGED"
    assert_invariant(deployment)


def test_jobs_on_one_routed_object_each_run_their_own_inference(
    gpu_app: FunctionApp, deployment: Deployment, encoded_samples: dict[str, Path]
) -> None:
    """Two jobs for one object on the GPU are two runs (the run identity names the job: one never replays the
    other's routing), each under its own inference, and each ends with its own completion."""
    key = "audio/long.flac"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["flac"].read_bytes())
    first = call(gpu_app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/{key}"})[1]
    second = call(gpu_app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/{key}"})[1]
    messages = [m for m in deployment.receive(wait=1) if '"job_id"' in m["Body"]]
    assert len(messages) == 2
    assert gpu_app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
    running = {job_id for job_id, item in jobs_of(deployment).items() if item["status"]["S"] == "running"}
    assert running == {first["job_id"], second["job_id"]}  # while the inferences are in flight

    for job in (first, second):
        done = gpu_completes(gpu_app, deployment, key, encoded_samples["flac"], inference_of(deployment, job["job_id"]))
        assert done["status"] == "succeeded"
        assert call(gpu_app, "GET", job["status_url"])[1]["status"] == "succeeded"
    assert_invariant(deployment)


def test_a_late_gpu_failure_after_success_changes_nothing(
    gpu_app: FunctionApp, deployment: Deployment, encoded_samples: dict[str, Path]
) -> None:
    key = "audio/late.flac"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["flac"].read_bytes())
    job = call(gpu_app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/{key}"})[1]
    messages = [m for m in deployment.receive(wait=1) if '"job_id"' in m["Body"]]
    gpu_app.lambda_handler(deployment.sqs_event(messages), LambdaContext())
    inference = inference_of(deployment, job["job_id"])
    gpu_completes(gpu_app, deployment, key, encoded_samples["flac"], inference)
    before = deployment.object_keys("results/")

    gpu_app.lambda_handler(completion(deployment, key, inference, "Failed"), LambdaContext())

    assert deployment.object_keys("results/") == before == ["results/late.flac.json", "results/late.flac.rttm"]
    assert call(gpu_app, "GET", job["status_url"])[1]["status"] == "succeeded"
    assert_invariant(deployment)


def as_s3_sends(messages: list[dict[str, Any]], **fields: str) -> list[dict[str, Any]]:
    """moto's notifications lack `versionId` and `sequencer`; S3's carry both."""
    sent = []
    for message in messages:
        body = json.loads(message["Body"])
        if "Records" in body:
            body["Records"][0]["s3"]["object"].update(fields)
            sent.append({**message, "Body": json.dumps(body)})
    return sent


def test_reordered_versions_in_a_versioned_bucket(
    moto_endpoint: str, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """v2's event is processed first, then v1's late one (it names v1 by version id): v1 writes nothing."""
    deployment = create_deployment(versioned=True)
    app = make_app(deployment, tiny_model_dir, tmp_path)
    key = "audio/talk.wav"
    put = deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["wav"].read_bytes())
    v1 = as_s3_sends(deployment.notifications(1), versionId=put["VersionId"], sequencer="0065A1B2C3D4E5F601")
    put = deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["flac"].read_bytes())
    v2 = as_s3_sends(deployment.notifications(1), versionId=put["VersionId"], sequencer="0065A1B2C3D4E5F602")

    assert app.lambda_handler(deployment.sqs_event(v2), LambdaContext()) == {"batchItemFailures": []}
    assert app.lambda_handler(deployment.sqs_event(v1), LambdaContext()) == {"batchItemFailures": []}

    assert deployment.get_json("results/talk.wav.json")["audio"]["original"]["codec"] == "flac"
    assert [event["detail-type"] for event in deployment.captured_events()] == ["Diarization Succeeded"]
    assert_invariant(deployment)


def test_reordered_versions_in_an_unversioned_bucket(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """v1 then v2 uploaded, v2's event processed first, then v1's late one: its ETag is gone, so the current version
    (v2) is what it names now, and the run is v2's again (replayed); v2's result stays."""
    app = make_app(deployment, tiny_model_dir, tmp_path)
    key = "audio/talk.wav"
    put = deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["wav"].read_bytes())
    v1 = as_s3_sends(deployment.notifications(1), eTag=put["ETag"].strip('"'), sequencer="0065A1B2C3D4E5F601")
    put = deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["flac"].read_bytes())
    v2 = as_s3_sends(deployment.notifications(1), eTag=put["ETag"].strip('"'), sequencer="0065A1B2C3D4E5F602")

    assert app.lambda_handler(deployment.sqs_event(v2), LambdaContext()) == {"batchItemFailures": []}
    assert app.lambda_handler(deployment.sqs_event(v1), LambdaContext()) == {"batchItemFailures": []}

    assert deployment.object_keys("results/") == ["results/talk.wav.json", "results/talk.wav.rttm"]
    assert deployment.get_json("results/talk.wav.json")["audio"]["original"]["codec"] == "flac"
    assert [event["detail-type"] for event in deployment.captured_events()] == ["Diarization Succeeded"]
    assert_invariant(deployment)


def test_a_multipart_upload_completed_after_an_overwrite_is_the_newer_version(
    moto_endpoint: str, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """A large multipart upload starts, a small overwrite (v1) is written and processed, then the upload completes
    (v2; moto sends two notifications for it, both named v2 here). S3 stamps a multipart object with the
    Last-Modified of the upload's *start* (moto stamps the completion: the HEAD answer is adjusted), so v2 has the
    earlier Last-Modified and the later sequencer: it is the current version, and its result replaces v1's."""
    deployment = create_deployment(versioned=True)
    app = make_app(deployment, tiny_model_dir, tmp_path)
    s3, bucket, key = deployment.s3, deployment.bucket, "audio/multipart.flac"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    put = s3.put_object(Bucket=bucket, Key=key, Body=encoded_samples["wav"].read_bytes())
    v1 = as_s3_sends(deployment.notifications(1), versionId=put["VersionId"], sequencer="0065A1B2C3D4E5F601")
    assert app.lambda_handler(deployment.sqs_event(v1), LambdaContext()) == {"batchItemFailures": []}
    assert deployment.get_json("results/multipart.flac.json")["audio"]["original"]["codec"] == "pcm_s16le"
    part = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=encoded_samples["flac"].read_bytes()
    )
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    v2 = as_s3_sends(deployment.notifications(1), versionId=done["VersionId"], sequencer="0065A1B2C3D4E5F602")

    def as_s3_stamps_it(parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("VersionId") == done["VersionId"]:
            parsed["LastModified"] = started

    app.diarize_object.store.client.meta.events.register("after-call.s3.HeadObject", as_s3_stamps_it)
    assert app.lambda_handler(deployment.sqs_event(v2), LambdaContext()) == {"batchItemFailures": []}

    assert deployment.get_json("results/multipart.flac.json")["audio"]["original"]["codec"] == "flac"
    assert deployment.object_keys("results/") == ["results/multipart.flac.json", "results/multipart.flac.rttm"]
    assert_invariant(deployment)


class NewerVersionFirst:
    """Between v1's HEAD and its download, v2 is uploaded and fully processed: v1 then reads INPUT_CHANGED."""

    def __init__(self, app: FunctionApp, deployment: Deployment, key: str, data: bytes) -> None:
        self.app, self.deployment, self.key, self.data = app, deployment, key, data
        self.store = app.diarize_object.store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def download(self, ref: Any, path: Path) -> None:
        if self.data:
            data, self.data = self.data, b""
            self.deployment.s3.put_object(Bucket=self.deployment.bucket, Key=self.key, Body=data)
            outcome = self.app.lambda_handler({"bucket": self.deployment.bucket, "key": self.key}, LambdaContext())
            assert outcome["status"] == "succeeded", outcome
        self.store.download(ref, path)


def test_input_changed_of_an_older_version_leaves_the_newer_result(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    app = make_app(deployment, tiny_model_dir, tmp_path)
    key = "audio/race.wav"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["wav"].read_bytes())
    app.diarize_object.store = NewerVersionFirst(app, deployment, key, encoded_samples["flac"].read_bytes())

    outcome = app.lambda_handler(deployment.sqs_event(deployment.notifications(1)), LambdaContext())

    assert outcome == {"batchItemFailures": []}
    assert deployment.object_keys("results/") == ["results/race.wav.json", "results/race.wav.rttm"]
    assert deployment.get_json("results/race.wav.json")["audio"]["original"]["codec"] == "flac"
    assert_invariant(deployment)


def test_a_duplicate_delivery_keeps_one_result(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    app = make_app(deployment, tiny_model_dir, tmp_path)
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/dup.ogg", Body=encoded_samples["ogg"].read_bytes())
    event = deployment.sqs_event(deployment.notifications(1))
    for _ in range(2):
        assert app.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert deployment.object_keys("results/") == ["results/dup.ogg.json", "results/dup.ogg.rttm"]
    assert len(deployment.captured_events()) == 1  # the second delivery replays the first run's outcome
    assert_invariant(deployment)


def test_the_ordering_record_takes_newer_versions_and_keeps_a_success(deployment: Deployment) -> None:
    from diarization.aws_ports.dynamodb_ordering import DynamoOrdering
    from diarization.service.ordering import order_of

    record = DynamoOrdering(deployment.ordering_table)
    second = "2026-11-25T20:00:00Z"

    def version(name: str, sequencer: str | None) -> Any:
        return order_of(ObjectRef("b", "k", None, name, second), sequencer)

    # S3's rule: right-pad the shorter sequencer with zeros, then compare as strings: "0A1" (= "0A10") < "0A11" < "0B".
    older, newer, newest = version("e1", "0A1"), version("e2", "0A11"), version("e3", "0B")
    assert older.position < newer.position < newest.position
    assert record.claim("b", "k", newer, succeeded=True)
    assert not record.claim("b", "k", older, succeeded=True)
    assert not record.claim("b", "k", older, succeeded=False)
    assert not record.claim("b", "k", newer, succeeded=False)  # a failure never replaces this version's success
    assert record.claim("b", "k", newer, succeeded=True)  # the same version again (other hints)
    assert record.claim("b", "k", newest, succeeded=False)  # a newer version's failure does
    assert record.claim("b", "k", newest, succeeded=True)


def test_the_ordering_record_puts_the_sequencer_before_last_modified(deployment: Deployment) -> None:
    """A multipart upload's Last-Modified is its start: with a sequencer on both sides, the sequencer alone decides;
    when either side has none, Last-Modified does (a record written before sequencers were stored included)."""
    from diarization.aws_ports.dynamodb_ordering import DynamoOrdering
    from diarization.service.locations import ObjectRef
    from diarization.service.ordering import order_of

    record = DynamoOrdering(deployment.ordering_table)

    def version(name: str, modified: str, sequencer: str | None) -> Any:
        return order_of(ObjectRef("b", "k", None, name, modified), sequencer)

    small = version("small", "2026-11-25T20:00:05Z", "0065A1")  # overwrote while the large one was uploading
    large = version("large", "2026-11-25T20:00:00Z", "0065A2")  # the multipart upload, completed last
    assert large.position < small.position
    assert record.claim("b", "k", small, succeeded=True)
    assert record.claim("b", "k", large, succeeded=True)
    assert not record.claim("b", "k", small, succeeded=True)  # the late event of the overwritten version
    assert not record.claim("b", "k", small, succeeded=False)

    unsequenced = version("job", "2026-11-25T20:00:01Z", None)  # a job message: Last-Modified alone
    assert record.claim("b", "k", unsequenced, succeeded=True)
    assert not record.claim("b", "k", version("older", "2026-11-25T20:00:00Z", "0065A9"), succeeded=True)
    record.table.put_item(Item={"object": "b/old", "position": small.position, "version": "small", "ok": True})
    assert not record.claim("b", "old", large, succeeded=True)  # a record without a `sequencer`: by position


def dead_lettered(deployment: Deployment, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The DLQ's event source mapping delivering messages the work queue gave up on after 3 receives."""
    event = deployment.sqs_event(messages)
    arn = deployment.env["DEAD_LETTER_QUEUE_ARN"]
    for record in event["Records"]:
        record.update(eventSourceARN=arn, attributes={"ApproximateReceiveCount": "3"})
    return event


def test_a_dead_lettered_job_fails_with_an_error_object(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """Timeouts and out-of-memory kills never reach the handler's code: the DLQ consumer ends what they left."""
    app = make_app(deployment, tiny_model_dir, tmp_path)
    key = "audio/killed.wav"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["wav"].read_bytes())
    job = call(app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/{key}"})[1]
    messages = [m for m in deployment.receive(wait=1) if '"job_id"' in m["Body"]]

    assert app.lambda_handler(dead_lettered(deployment, messages), LambdaContext()) == {"batchItemFailures": []}

    status = call(app, "GET", job["status_url"])[1]
    assert status["status"] == "failed" and status["error"]["code"] == "INTERNAL_ERROR"
    assert status["error"]["details"] == {"deliveries": 3}
    assert deployment.object_keys("results/") == ["results/killed.wav.error.json"]
    assert_invariant(deployment)


def test_a_dead_lettered_message_of_a_finished_object_changes_nothing(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """The result was written, then the invocation died before acknowledging: the success stays."""
    app = make_app(deployment, tiny_model_dir, tmp_path)
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/done.ogg", Body=encoded_samples["ogg"].read_bytes())
    messages = [m for m in deployment.notifications(1) if '"Records"' in m["Body"]]
    assert app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}

    assert app.lambda_handler(dead_lettered(deployment, messages), LambdaContext()) == {"batchItemFailures": []}

    assert deployment.object_keys("results/") == ["results/done.ogg.json", "results/done.ogg.rttm"]
    assert_invariant(deployment)


def test_a_dead_lettered_message_that_is_not_work_stays_in_the_queue(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path
) -> None:
    app = make_app(deployment, tiny_model_dir, tmp_path)
    junk = {"MessageId": "m-1", "ReceiptHandle": "r", "Body": "not json", "MD5OfBody": "x"}
    with pytest.raises(BatchProcessingError):  # the whole batch failed: Lambda returns it to the queue
        app.lambda_handler(dead_lettered(deployment, [junk]), LambdaContext())
    assert deployment.object_keys("results/") == []


def test_a_failed_asynchronous_invocation_ends_through_its_on_failure_record(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """S3 -> SNS -> Lambda is asynchronous: after Lambda's retries its on-failure destination (the DLQ) gets a record
    wrapping the original event, and the same consumer ends the job with an error object."""
    app = make_app(deployment, tiny_model_dir, tmp_path)
    job = call(app, "POST", "/jobs", {"upload": True, "filename": "call.wav"})[1]
    key = job["input"].removeprefix(f"s3://{deployment.bucket}/")
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["wav"].read_bytes())
    (notification,) = [m["Body"] for m in deployment.notifications(1) if '"Records"' in m["Body"]]
    sns_event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Type": "Notification", "Message": notification}}]}
    record = {
        "version": "1.0",
        "requestContext": {"requestId": "r-1", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:f"},
        "requestPayload": sns_event,
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "Task timed out after 900.00 seconds"},
    }
    dlq_url = deployment.sqs.get_queue_url(QueueName=deployment.env["DEAD_LETTER_QUEUE_ARN"].rsplit(":", 1)[-1])
    deployment.sqs.send_message(QueueUrl=dlq_url["QueueUrl"], MessageBody=json.dumps(record))
    messages = deployment.receive(dlq_url["QueueUrl"], wait=1)

    assert app.lambda_handler(dead_lettered(deployment, messages), LambdaContext()) == {"batchItemFailures": []}

    status = call(app, "GET", job["status_url"])[1]
    assert status["status"] == "failed" and status["error"]["code"] == "INTERNAL_ERROR", status
    name = key.removeprefix("audio/")
    assert deployment.object_keys("results/") == [f"results/{name}.error.json"]
    assert_invariant(deployment)


def test_a_job_never_replays_another_jobs_run_and_names_stay_with_their_caller(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """Alice's second job on her own upload names its speakers with her voiceprint: it is a run of its own, not a
    replay of her first job's (unnamed) outcome. A job naming voiceprints for an object of the shared space is
    refused: that object's results are every caller's, and Bob's job on it downloads them."""
    app = make_app(deployment, tiny_model_dir, tmp_path)
    model = app.diarizer.embedding_model()
    alice = Voiceprint("alice", (1.0,) + (0.0,) * (model.dimension - 1), model, "2026-11-25T00:00:00Z", {})
    app.api.voiceprints.store.put("123456789012:AROAALICE", "alice", alice.to_dict())  # type: ignore[union-attr]

    first = call(app, "POST", "/jobs", {"upload": True, "filename": "mine.ogg"}, caller=ALICE)[1]
    assert post_upload(first, encoded_samples["ogg"].read_bytes()) == 204
    process_queue(app, deployment, 1)
    status, second = call(app, "POST", "/jobs", {"s3_uri": first["input"], "voiceprints": ["alice"]}, caller=ALICE)
    assert status == 202, second
    process_queue(app, deployment, 1)
    assert call(app, "GET", second["status_url"], caller=ALICE)[1]["status"] == "succeeded"
    named = deployment.get_json(first["result"]["json"].split("/", 3)[3])
    assert named["identification"]["voiceprints"] == ["alice"]

    key = "audio/shared.ogg"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["ogg"].read_bytes())
    process_queue(app, deployment, 1)  # dropped into the bucket: diarized without names
    uri = f"s3://{deployment.bucket}/{key}"
    status, body = call(app, "POST", "/jobs", {"s3_uri": uri, "voiceprints": ["alice"]}, caller=ALICE)
    assert (status, body["error"]["code"]) == (400, "VOICEPRINTS_ON_SHARED_INPUT")
    bobs = call(app, "POST", "/jobs", {"s3_uri": uri}, caller=BOB)[1]
    process_queue(app, deployment, 1)
    seen = call(app, "GET", bobs["status_url"], caller=BOB)[1]
    with urllib.request.urlopen(seen["download"]["json"]) as response:
        result = json.loads(response.read())
    assert "identification" not in result and all(speaker["name"] is None for speaker in result["speakers"])
    for job in (first, second):
        assert call(app, "GET", job["status_url"], caller=BOB)[0] == 404
    assert_invariant(deployment)


def test_another_callers_job_and_upload_stay_out_of_reach(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """Bob tries Alice's job, its results and its upload while it runs and after: 404s, and her job is untouched."""
    app = make_app(deployment, tiny_model_dir, tmp_path)
    job = call(app, "POST", "/jobs", {"upload": True, "filename": "alice.ogg"}, caller=ALICE)[1]
    assert post_upload(job, encoded_samples["ogg"].read_bytes()) == 204
    for route in ("/jobs", "/diarize"):
        status, body = call(app, "POST", route, {"s3_uri": job["input"]}, caller=BOB)
        assert (status, body["error"]["code"]) == (404, "INPUT_NOT_FOUND")
    process_queue(app, deployment, 1)

    assert call(app, "GET", job["status_url"], caller=BOB)[0] == 404
    status, mine = call(app, "GET", job["status_url"], caller=ALICE)
    assert status == 200 and mine["status"] == "succeeded" and "download" in mine
    assert [j["owner"]["S"] for j in jobs_of(deployment).values()] == ["123456789012:AROAALICE"]  # Bob made none
    assert_invariant(deployment)
