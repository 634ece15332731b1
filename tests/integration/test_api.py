"""The HTTP API (API Gateway v2 events) against moto server: jobs, uploads through presigned URLs, sync calls."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
import requests

from diarization.aws.app import FunctionApp
from diarization.core.result import load_schema
from diarization.errors import InvalidParameterError
from infra.local_aws import Deployment, LambdaContext, create_deployment
from infra.media import encode_as, flac_declaring, speech_like


@pytest.fixture()
def deployment(moto_endpoint: str) -> Deployment:
    return create_deployment()


@pytest.fixture()
def app(deployment: Deployment, tiny_model_dir: Path, tmp_path: Path) -> FunctionApp:
    env = {**os.environ, **deployment.env, "MODEL_DIR": str(tiny_model_dir), "NUM_THREADS": "2"}
    app = FunctionApp(env)
    app.diarize_object.workdir = app.api.diarize_sync.workdir = tmp_path
    return app


def iam(principal: str, session: str | None = None, account: str = "123456789012") -> dict[str, Any]:
    """`requestContext.authorizer.iam` as API Gateway fills it for a SigV4-signed request: an assumed role's
    session (`AROA...:session`) or an IAM user (`AIDA...`)."""
    caller_id = f"{principal}:{session}" if session else principal
    arn = f"arn:aws:sts::{account}:assumed-role/caller/{session}" if session else f"arn:aws:iam::{account}:user/u"
    return {
        "accessKey": "ASIAEXAMPLE",
        "accountId": account,
        "callerId": caller_id,
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": arn,
        "userId": caller_id,
    }


ALICE, ALICE_AGAIN = iam("AROAALICE", "session-1"), iam("AROAALICE", "session-2")
BOB = iam("AIDABOB")
FEDERATED_CAROL, FEDERATED_DAVE = iam("123456789012:carol"), iam("123456789012:dave")
"""GetFederationToken's users: caller id `{account id}:{name}`."""
ROOT = iam("123456789012")
"""The account's root user: caller id = the account id."""


def call(
    app: FunctionApp,
    method: str,
    path: str,
    body: Any = None,
    raw: str | None = None,
    caller: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    """An HTTP API (payload format 2.0) request, as API Gateway delivers it, and the decoded response. Without a
    `caller` there is no IAM context, as under `sam local start-api`."""
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:00:00:00 +0000",
            "timeEpoch": 0,
            **({"authorizer": {"iam": caller}} if caller else {}),
        },
        "body": raw if raw is not None else (json.dumps(body) if body is not None else None),
        "isBase64Encoded": False,
    }
    response = app.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def process_queue(app: FunctionApp, deployment: Deployment, expected: int) -> None:
    """Deliver what the work queue holds to the function, as the SQS event source mapping would."""
    delivered = 0
    for _ in range(10):
        messages = [m for m in deployment.receive(wait=1) if "s3:TestEvent" not in m["Body"]]
        if messages:
            assert app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
            delivered += len(messages)
        if delivered >= expected:
            return
    raise AssertionError(f"only {delivered} of {expected} messages arrived")


def post_upload(job: dict[str, Any], data: bytes) -> int:
    """What a browser or `curl -F` does with the job's upload form: a multipart POST, the file last."""
    form = job["upload"]
    assert form["method"] == "POST"
    response = requests.post(form["url"], data=form["fields"], files={"file": ("audio", data)}, timeout=60)
    return response.status_code


def test_upload_job_end_to_end(app: FunctionApp, deployment: Deployment, encoded_samples) -> None:
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "call 1.m4a", "num_speakers": 2})
    assert status == 202 and job["status"] == "queued" and job["status_url"] == f"/jobs/{job['job_id']}"
    assert job["input"] == f"s3://{deployment.bucket}/audio/uploads/{job['job_id']}/call 1.m4a"
    assert job["result"]["json"] == f"s3://{deployment.bucket}/results/uploads/{job['job_id']}/call 1.m4a.json"
    assert sorted(job["upload"]) == ["expires_in", "fields", "max_bytes", "method", "url"]
    assert job["upload"]["fields"]["key"] == f"audio/uploads/{job['job_id']}/call 1.m4a"
    assert call(app, "GET", job["status_url"])[1]["status"] == "queued"

    assert post_upload(job, encoded_samples["m4a"].read_bytes()) == 204
    process_queue(app, deployment, 1)

    status, done = call(app, "GET", job["status_url"])
    assert status == 200 and done["status"] == "succeeded" and done["speaker_count"] == 2
    with urllib.request.urlopen(done["download"]["json"]) as response:
        result = json.loads(response.read())
    jsonschema.validate(result, load_schema())
    assert result["parameters"]["num_speakers"] == 2  # the job's hints reached the pipeline
    with urllib.request.urlopen(done["download"]["rttm"]) as response:
        assert response.read().decode().startswith("SPEAKER call_1 1 ")


def test_the_upload_form_bounds_size_key_and_lifetime(app: FunctionApp, deployment: Deployment) -> None:
    """S3 enforces a POST policy's conditions; moto (5.2.5) stores whatever is posted and checks none of them, so
    the conditions are read from the signed policy itself: what S3 would refuse is decided there."""
    before = time.time()
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "big.wav"})
    assert status == 202
    form = job["upload"]
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    limit = app.settings.max_audio_bytes
    assert form["max_bytes"] == limit and form["expires_in"] == app.aws.url_expiry_seconds == 3600
    assert ["content-length-range", 1, limit] in policy["conditions"]
    assert {"key": f"audio/uploads/{job['job_id']}/big.wav"} in policy["conditions"]
    assert {"bucket": deployment.bucket} in policy["conditions"]
    assert not [c for c in policy["conditions"] if isinstance(c, list) and c[0] == "starts-with"]  # no wildcard key
    expires = time.mktime(time.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + 3600 - 5 <= expires <= time.time() + 3600 + 5
    assert form["fields"]["x-amz-algorithm"] == "AWS4-HMAC-SHA256"  # SigV4, not botocore's SigV2 default


def test_an_upload_form_never_takes_any_name_in_its_folder(app: FunctionApp, deployment: Deployment) -> None:
    """S3 replaces `${filename}` in a form's key with the posted file's name, and botocore signs a key ending in it
    as `starts-with` the job's folder: refused as a name, and never signed for by the store."""
    from diarization.aws_ports.s3 import S3Store

    status, body = call(app, "POST", "/jobs", {"upload": True, "filename": "${filename}"})
    assert (status, body["error"]["code"]) == (400, "INVALID_PARAMETER") and "$" in body["error"]["message"]
    assert body["error"]["details"] == {"parameter": "filename", "character": "$"}
    assert boto3.client("dynamodb").scan(TableName=deployment.jobs_table)["Items"] == []
    with pytest.raises(InvalidParameterError):
        S3Store().presign_post(deployment.bucket, "audio/uploads/" + "a" * 32 + "/${filename}", 60, 10)


def test_an_upload_form_used_again_after_the_job_ended_is_not_diarized_but_noted(
    app: FunctionApp, deployment: Deployment, tmp_path: Path
) -> None:
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "once.flac"}, caller=ALICE)
    assert status == 202
    assert post_upload(job, encode_as(speech_like(4.0), 16_000, tmp_path, "flac").read_bytes()) == 204
    process_queue(app, deployment, 1)
    _, done = call(app, "GET", job["status_url"], caller=ALICE)
    assert done["status"] == "succeeded"
    key = f"results/uploads/{job['job_id']}/once.flac.json"
    first = deployment.get_json(key)

    assert post_upload(job, encode_as(speech_like(6.0, seed=3), 16_000, tmp_path, "flac").read_bytes()) == 204
    process_queue(app, deployment, 1)  # acknowledged: an error object for the new file, no run

    _, after = call(app, "GET", job["status_url"], caller=ALICE)
    assert after["status"] == "succeeded" and after["updated_at"] == done["updated_at"]
    assert after["duration_seconds"] == pytest.approx(4.0, abs=0.05) and first["audio"]["duration_seconds"] < 5
    error = deployment.get_json(key.removesuffix(".json") + ".error.json")
    assert error["error"]["code"] == "UPLOAD_ALREADY_USED" and error["input"]["uri"] == job["input"]
    assert deployment.object_keys(f"results/uploads/{job['job_id']}/") == [key.removesuffix(".json") + ".error.json"]


def test_jobs_belong_to_their_caller(app: FunctionApp, deployment: Deployment, tmp_path: Path) -> None:
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "mine.flac"}, caller=ALICE)
    assert status == 202
    assert post_upload(job, encode_as(speech_like(4.0), 16_000, tmp_path, "flac").read_bytes()) == 204
    stored = boto3.resource("dynamodb").Table(deployment.jobs_table).get_item(Key={"job_id": job["job_id"]})["Item"]
    assert stored["owner"] == "123456789012:AROAALICE"

    # Every session of Alice's role sees the job; Bob, another account's Alice and the anonymous caller do not,
    # and what they get is exactly what a job id that never existed gets.
    assert call(app, "GET", job["status_url"], caller=ALICE_AGAIN)[0] == 200
    missing_id = "f" * 32
    _, never = call(app, "GET", f"/jobs/{missing_id}", caller=BOB)
    for stranger in (BOB, iam("AROAALICE", "session-1", account="210987654321"), None):
        status, body = call(app, "GET", job["status_url"], caller=stranger)
        assert (status, json.dumps(body).replace(job["job_id"], missing_id)) == (404, json.dumps(never))

    # Bob may not use Alice's upload as an input, and cannot tell it from an upload that does not exist.
    for route, extra in (("/jobs", {}), ("/diarize", {})):
        status, body = call(app, "POST", route, {"s3_uri": job["input"], **extra}, caller=BOB)
        assert (status, body["error"]["code"]) == (404, "INPUT_NOT_FOUND"), body
        ghost = f"s3://{deployment.bucket}/audio/uploads/{missing_id}/mine.flac"
        _, ghost_body = call(app, "POST", route, {"s3_uri": ghost}, caller=BOB)
        assert json.dumps(body).replace(job["input"], ghost) == json.dumps(ghost_body)

    # Alice may; and anything else under the input prefix is the deployment's shared space.
    status, result = call(app, "POST", "/diarize", {"s3_uri": job["input"]}, caller=ALICE_AGAIN)
    assert status == 200 and result["input"]["uri"] == job["input"]
    deployment.s3.put_object(
        Bucket=deployment.bucket,
        Key="audio/shared.flac",
        Body=encode_as(speech_like(3.0), 16_000, tmp_path, "flac").read_bytes(),
    )
    status, shared = call(app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/audio/shared.flac"}, caller=BOB)
    assert status == 202 and call(app, "GET", shared["status_url"], caller=BOB)[0] == 200


def test_federated_users_and_the_root_user_are_tenants_of_their_own(app: FunctionApp) -> None:
    """Their caller ids hold a ':' too; only an assumed role's session is cut off."""
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "carol.flac"}, caller=FEDERATED_CAROL)
    assert status == 202
    assert call(app, "GET", job["status_url"], caller=FEDERATED_CAROL)[0] == 200
    for stranger in (FEDERATED_DAVE, ROOT):
        assert call(app, "GET", job["status_url"], caller=stranger)[0] == 404
    status, root_job = call(app, "POST", "/jobs", {"upload": True, "filename": "root.flac"}, caller=ROOT)
    assert status == 202 and call(app, "GET", root_job["status_url"], caller=FEDERATED_CAROL)[0] == 404


def test_job_for_an_existing_object(app: FunctionApp, deployment: Deployment, encoded_samples) -> None:
    deployment.s3.put_object(
        Bucket=deployment.bucket, Key="audio/old/meeting.flac", Body=encoded_samples["flac"].read_bytes()
    )
    status, job = call(
        app, "POST", "/jobs", {"s3_uri": f"s3://{deployment.bucket}/audio/old/meeting.flac", "max_speakers": 1}
    )
    assert status == 202
    process_queue(app, deployment, 2)  # the upload's own notification, and the job's message
    status, done = call(app, "GET", f"/jobs/{job['job_id']}")
    assert done["status"] == "succeeded" and done["speaker_count"] <= 1


def test_failed_job_reports_the_error(app: FunctionApp, deployment: Deployment) -> None:
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "broken.wav"})
    assert status == 202
    deployment.s3.put_object(Bucket=deployment.bucket, Key=f"audio/uploads/{job['job_id']}/broken.wav", Body=b"x" * 900)
    process_queue(app, deployment, 1)
    _, done = call(app, "GET", f"/jobs/{job['job_id']}")
    assert done["status"] == "failed" and done["error"]["code"] == "INVALID_AUDIO"
    assert done["error"]["location"] == job["result"]["error"]


def test_upload_names_are_limited_in_utf8_bytes_before_any_job(app: FunctionApp, deployment: Deployment) -> None:
    """The upload key is `audio/uploads/{32 hex}/{filename}` and its longest output `results/uploads/{32 hex}/
    {filename}.pyannoteai.json`: 959 bytes of filename fit S3's 1,024, whatever the number of characters."""
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "é" * 479 + "a", "formats": ["pyannoteai"]})
    longest = job["result"]["pyannoteai"].removeprefix(f"s3://{deployment.bucket}/")
    assert status == 202 and len(longest.encode()) == 1024
    status, body = call(app, "POST", "/jobs", {"upload": True, "filename": "é" * 480})
    assert (status, body["error"]["code"]) == (400, "KEY_TOO_LONG") and "1025 bytes" in body["error"]["message"]
    assert body["error"]["details"]["key_bytes"] == 1025
    jobs = boto3.client("dynamodb").scan(TableName=deployment.jobs_table)["Items"]
    assert [item["job_id"]["S"] for item in jobs] == [job["job_id"]]  # the refused one left no job behind


@pytest.mark.parametrize(
    ("method", "path", "body", "raw", "status", "code"),
    [
        ("POST", "/jobs", None, "{not json", 400, "INVALID_REQUEST"),
        ("POST", "/jobs", None, "", 400, "INVALID_REQUEST"),
        ("POST", "/jobs", None, "[" * 100_000, 400, "INVALID_REQUEST"),
        ("POST", "/diarize", None, '{"s3_uri": ' + "[" * 100_000, 400, "INVALID_REQUEST"),
        ("POST", "/jobs", ["s3://x"], None, 400, "INVALID_REQUEST"),
        ("POST", "/jobs", {"s3_uri": "s3://{bucket}/audio/a.wav", "colour": "red"}, None, 400, "INVALID_REQUEST"),
        ("POST", "/jobs", {}, None, 400, "INVALID_REQUEST"),
        ("POST", "/jobs", {"s3_uri": "https://example.com/a.wav"}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/jobs", {"s3_uri": "s3://other-bucket/audio/a.wav"}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/jobs", {"s3_uri": "s3://{bucket}/audio/../secrets.wav"}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/jobs", {"s3_uri": "s3://{bucket}/results/a.wav.json"}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/jobs", {"s3_uri": "s3://{bucket}/audio/missing.wav"}, None, 404, "INPUT_NOT_FOUND"),
        ("POST", "/jobs", {"upload": True, "filename": "../../etc/passwd"}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/jobs", {"upload": True, "filename": ".."}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/jobs", {"upload": True, "filename": "${filename}"}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/jobs", {"upload": True}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/jobs", {"s3_uri": "s3://{bucket}/audio/x.wav.error"}, None, 400, "INPUT_NAME_RESERVED"),
        ("POST", "/jobs", {"s3_uri": "s3://{bucket}/audio/_key-too-long/x.wav"}, None, 400, "INPUT_NAME_RESERVED"),
        ("POST", "/jobs", {"s3_uri": "s3://{bucket}/audio/" + "k" * 1018}, None, 400, "KEY_TOO_LONG"),
        ("POST", "/jobs", {"upload": True, "filename": "x.wav.error"}, None, 400, "INPUT_NAME_RESERVED"),
        ("POST", "/jobs", {"upload": True, "filename": "é" * 880}, None, 400, "KEY_TOO_LONG"),
        ("POST", "/diarize", {"s3_uri": "s3://{bucket}/audio/x.wav.error"}, None, 400, "INPUT_NAME_RESERVED"),
        (
            "POST",
            "/jobs",
            {"upload": True, "filename": "a.wav", "s3_uri": "s3://{bucket}/audio/a.wav"},
            None,
            400,
            "INVALID_REQUEST",
        ),
        ("POST", "/jobs", {"upload": True, "filename": "a.wav", "num_speakers": 0}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/jobs", {"upload": True, "filename": "a.wav", "num_speakers": "2"}, None, 400, "INVALID_PARAMETER"),
        ("GET", "/jobs/0123456789abcdef0123456789abcdef", None, None, 404, "NOT_FOUND"),
        ("GET", "/jobs/not-a-job", None, None, 404, "NOT_FOUND"),
        ("DELETE", "/jobs", None, None, 404, "NOT_FOUND"),
        ("POST", "/diarize", {"audio_base64": "!!!"}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/diarize", {"audio_base64": base64.b64encode(b"junk" * 99).decode()}, None, 422, "INVALID_AUDIO"),
        ("POST", "/diarize", {"audio_base64": 12}, None, 400, "INVALID_PARAMETER"),
        ("POST", "/diarize", {}, None, 400, "INVALID_REQUEST"),
    ],
)
def test_user_mistakes_are_4xx_with_an_error_object(
    app: FunctionApp, deployment: Deployment, method: str, path: str, body: Any, raw: str | None, status: int, code: str
) -> None:
    if body is not None:
        body = json.loads(json.dumps(body).replace("{bucket}", deployment.bucket))
    got_status, got = call(app, method, path, body, raw)
    assert (got_status, got["error"]["code"]) == (status, code), got
    assert got["error"]["message"]


def test_oversize_inline_audio(app: FunctionApp) -> None:
    status, body = call(app, "POST", "/diarize", {"audio_base64": "A" * (6 * 1024 * 1024)})
    assert status == 413 and body["error"]["code"] == "AUDIO_TOO_LARGE" and "POST /jobs" in body["error"]["message"]


def test_sync_diarize_short_audio(app: FunctionApp, tmp_path: Path) -> None:
    audio = encode_as(speech_like(5.0), 16_000, tmp_path, "flac").read_bytes()
    status, result = call(
        app, "POST", "/diarize", {"audio_base64": base64.b64encode(audio).decode(), "filename": "hello.flac"}
    )
    assert status == 200, result
    jsonschema.validate(result, load_schema())
    assert result["input"]["uri"] == "hello.flac" and result["audio"]["duration_seconds"] == pytest.approx(
        5.0, abs=0.05
    )


def test_sync_diarize_from_s3(app: FunctionApp, deployment: Deployment, tmp_path: Path) -> None:
    audio = encode_as(speech_like(4.0), 16_000, tmp_path, "ogg").read_bytes()
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/short.ogg", Body=audio)
    status, result = call(app, "POST", "/diarize", {"s3_uri": f"s3://{deployment.bucket}/audio/short.ogg"})
    assert status == 200 and result["input"]["uri"] == f"s3://{deployment.bucket}/audio/short.ogg"


def test_sync_diarize_refuses_what_cannot_finish_in_time(app: FunctionApp, encoded_samples) -> None:
    app.diarize_object.speed.real_time_factor = 1.0  # 30 s of audio then needs ~32 s, more than the 25 s budget
    audio = base64.b64encode(encoded_samples["opus"].read_bytes()).decode()
    status, body = call(app, "POST", "/diarize", {"audio_base64": audio})
    assert status == 422 and body["error"]["code"] == "TOO_LONG_FOR_SYNC" and "POST /jobs" in body["error"]["message"]


def test_sync_diarize_refuses_a_declared_4_hours_without_decoding(app: FunctionApp) -> None:
    """The header says 4 h, the file holds 2 s (decoding would find it truncated): the 422 comes from the header."""
    audio = base64.b64encode(flac_declaring(2.0, 4 * 3600)).decode()
    status, body = call(app, "POST", "/diarize", {"audio_base64": audio})
    assert status == 422 and body["error"]["code"] == "TOO_LONG_FOR_SYNC", body
    assert body["error"]["details"]["declared_seconds"] == 14400.0 and "audio_seconds" not in body["error"]["details"]
