"""Fault injection against moto server over HTTP: colliding and over-long input names.

The invariant of test_faults.py holds after each scenario; for refused names (see
``diarization.service.locations``) the error object is where the mapping puts it: ``{name}.error.json`` for a
name ending in ``.error``, the ``_key-too-long/`` fallback for a name whose keys do not fit S3's 1,024 bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from test_api import call
from test_faults import TERMINAL, assert_invariant, jobs_of, make_app

from diarization.aws.app import FunctionApp
from diarization.aws_ports.dynamodb_jobs import DynamoJobStore
from diarization.service.locations import MAX_KEY_BYTES, Locations, ObjectRef
from infra.local_aws import Deployment, LambdaContext, create_deployment


@pytest.fixture()
def deployment(moto_endpoint: str) -> Deployment:
    return create_deployment()


@pytest.fixture()
def app(deployment: Deployment, tiny_model_dir: Path, tmp_path: Path) -> FunctionApp:
    return make_app(deployment, tiny_model_dir, tmp_path)


def fallback_key(key: str) -> str:
    return f"results/_key-too-long/{hashlib.sha256(key.encode()).hexdigest()}.error.json"


def messages_for(messages: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The S3 notifications of one key (moto URL-encodes keys in them, as S3 does)."""

    def key_of(message: dict[str, Any]) -> str:
        return unquote_plus(json.loads(message["Body"])["Records"][0]["s3"]["object"]["key"])

    return [message for message in messages if '"Records"' in message["Body"] and key_of(message) == key]


def assert_invariant_with_refused_names(app: FunctionApp, deployment: Deployment) -> None:
    """test_faults.assert_invariant for accepted names; a refused name has exactly its error object, at the key the
    mapping gives, describing its current version; and no output key is longer than S3 allows."""
    locations = Locations(app.aws)
    too_long = [key for key in deployment.object_keys("results/") if len(key.encode()) > MAX_KEY_BYTES]
    assert too_long == []  # moto stores longer keys; S3 would refuse them
    for key in deployment.object_keys("audio/"):
        ref = ObjectRef(deployment.bucket, key)
        if locations.refusal(ref) is None:
            outputs = locations.outputs(ref)
            present = set(deployment.object_keys(outputs.json_key.removesuffix(".json")))
            assert (outputs.json_key in present) != (outputs.error_key in present), (key, present)
            continue
        body = deployment.get_json(locations.error_location(ref).error_key)
        current = deployment.s3.head_object(Bucket=deployment.bucket, Key=key)
        assert body["input"]["uri"] == ref.uri and body["input"]["etag"] == current["ETag"].strip('"')
        assert body["error"]["code"] in ("INPUT_NAME_RESERVED", "KEY_TOO_LONG")
    for job_id, job in jobs_of(deployment).items():
        assert job["status"]["S"] in TERMINAL, (job_id, job["status"]["S"])


@pytest.mark.parametrize("first", ["x.wav", "x.wav.error"])
def test_colliding_names_both_keep_their_outcomes(
    app: FunctionApp, deployment: Deployment, encoded_samples: dict[str, Path], first: str
) -> None:
    """Before, the result of `x.wav.error` was the error object of `x.wav`: one deleted the other's output."""
    for name in ("x.wav", "x.wav.error"):
        deployment.s3.put_object(
            Bucket=deployment.bucket, Key=f"audio/{name}", Body=encoded_samples["wav"].read_bytes()
        )
    messages = deployment.notifications(2)
    second = "x.wav.error" if first == "x.wav" else "x.wav"

    for name in (first, second):
        event = deployment.sqs_event(messages_for(messages, f"audio/{name}"))
        assert app.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}

    assert deployment.object_keys("results/") == [
        "results/x.wav.error.error.json",
        "results/x.wav.json",
        "results/x.wav.rttm",
    ]
    error = deployment.get_json("results/x.wav.error.error.json")["error"]
    assert error["code"] == "INPUT_NAME_RESERVED" and "Rename the input" in error["message"]
    assert sorted(event["detail-type"] for event in deployment.captured_events()) == [
        "Diarization Failed",
        "Diarization Succeeded",
    ]
    assert_invariant(deployment)  # unchanged: `x.wav.error`'s only output is its error object
    assert_invariant_with_refused_names(app, deployment)


def test_an_over_long_upload_fails_its_job_with_an_error_object_in_the_fallback(
    app: FunctionApp, deployment: Deployment
) -> None:
    """A 1,024-byte key (S3's limit) whose error object would be 1,037 bytes: before, the PUT of the error object
    failed with an unmapped ClientError, so the message was retried, dead-lettered, and no error object existed."""
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "a.wav"})
    assert status == 202
    folder = f"audio/uploads/{job['job_id']}/"
    key = folder + "é" * ((MAX_KEY_BYTES - len(folder)) // 2) + "a" * ((MAX_KEY_BYTES - len(folder)) % 2)
    assert len(key.encode()) == MAX_KEY_BYTES
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=b"any bytes")

    response = app.lambda_handler(deployment.sqs_event(deployment.notifications(1)), LambdaContext())

    assert response == {"batchItemFailures": []}  # acknowledged: nothing is retried or dead-lettered
    fallback = fallback_key(key)
    assert deployment.object_keys("results/") == [fallback]
    body = deployment.get_json(fallback)
    assert body["input"]["uri"] == f"s3://{deployment.bucket}/{key}" and body["error"]["code"] == "KEY_TOO_LONG"
    status, done = call(app, "GET", job["status_url"])
    assert done["status"] == "failed" and done["error"]["code"] == "KEY_TOO_LONG"
    assert done["error"]["location"] == f"s3://{deployment.bucket}/{fallback}"
    assert done["error"]["details"]["key_bytes"] == 1042  # its longest output key, `.pyannoteai.json`
    (event,) = deployment.captured_events()
    assert event["detail-type"] == "Diarization Failed" and event["detail"]["error"]["code"] == "KEY_TOO_LONG"
    assert_invariant_with_refused_names(app, deployment)


def test_a_name_of_880_e_is_refused_up_front_and_as_a_queued_job(app: FunctionApp, deployment: Deployment) -> None:
    """880 × "é" is 880 characters but 1,760 bytes. Before, the API accepted it (202) and the upload's PUT failed,
    leaving the job "queued". Now the API refuses it with no job; a job message naming it (sent by hand, or queued
    before this check existed) fails its job without asking S3 about a key no object can have."""
    status, body = call(app, "POST", "/jobs", {"upload": True, "filename": "é" * 880})
    assert (status, body["error"]["code"]) == (400, "KEY_TOO_LONG") and "1760 bytes" in body["error"]["message"]
    assert jobs_of(deployment) == {}

    key = "audio/" + "é" * 880
    DynamoJobStore(deployment.jobs_table, 1).create(
        "e" * 32, owner="anonymous", input=f"s3://{deployment.bucket}/{key}"
    )
    deployment.sqs.send_message(
        QueueUrl=deployment.queue_url,
        MessageBody=json.dumps({"job_id": "e" * 32, "bucket": deployment.bucket, "key": key}),
    )
    messages = [m for m in deployment.receive(wait=1) if '"job_id"' in m["Body"]]

    assert app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}

    assert deployment.object_keys("results/") == [fallback_key(key)]
    assert deployment.get_json(fallback_key(key))["input"]["uri"] == f"s3://{deployment.bucket}/{key}"
    status, done = call(app, "GET", f"/jobs/{'e' * 32}")
    assert done["status"] == "failed" and done["error"]["code"] == "KEY_TOO_LONG"
    assert_invariant_with_refused_names(app, deployment)
