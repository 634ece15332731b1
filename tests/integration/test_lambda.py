"""The Lambda function in process, against moto server: every trigger, bad input, duplicates, deadlines.

Uploads produce real S3 -> SQS notifications; the handler gets the same events Lambda would build
from them. The runtime tests (test_runtime.py) run the same function behind the real Lambda runtime.
"""

from __future__ import annotations

import io
import json
import os
import wave
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest

from diarization.aws import events
from diarization.aws.app import FunctionApp
from diarization.aws_ports.s3 import S3Store
from diarization.core.result import load_schema
from diarization.errors import InputChangedError
from diarization.service.locations import ObjectRef
from infra.local_aws import Deployment, LambdaContext, create_deployment
from infra.local_sagemaker import sns_event, topic_with_queue
from infra.media import speech_like, write_float_wav

SCHEMA = load_schema()
EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture()
def deployment(moto_endpoint: str) -> Deployment:
    return create_deployment()


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


def make_app(deployment: Deployment, model_dir: Path, scratch: Path, **extra: str) -> FunctionApp:
    env = {**os.environ, **deployment.env, "MODEL_DIR": str(model_dir), "NUM_THREADS": "2", **extra}
    app = FunctionApp(env)
    app.diarize_object.workdir = app.api.diarize_sync.workdir = scratch
    return app


@pytest.fixture()
def app(deployment: Deployment, tiny_model_dir: Path, scratch: Path) -> FunctionApp:
    return make_app(deployment, tiny_model_dir, scratch)


def upload(deployment: Deployment, key: str, data: bytes) -> None:
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=data)


def test_upload_to_result_through_sqs(app: FunctionApp, deployment: Deployment, encoded_samples, scratch: Path) -> None:
    key = "audio/team a/réunion 1+2.m4a"
    upload(deployment, key, encoded_samples["m4a"].read_bytes())
    messages = deployment.notifications(1)
    assert any("s3:TestEvent" in m["Body"] for m in messages)  # moto, like S3, sends one on set-up

    response = app.lambda_handler(deployment.sqs_event(messages), LambdaContext())

    assert response == {"batchItemFailures": []}
    result = deployment.get_json("results/team a/réunion 1+2.m4a.json")
    jsonschema.validate(result, SCHEMA)
    assert result["input"]["uri"] == f"s3://{deployment.bucket}/{key}"
    assert result["audio"]["original"]["codec"] == "aac"
    rttm = deployment.s3.get_object(Bucket=deployment.bucket, Key="results/team a/réunion 1+2.m4a.rttm")
    lines = rttm["Body"].read().decode().splitlines()
    assert len(lines) == len(result["segments"]) and lines[0].startswith("SPEAKER réunion_1+2 1 ")
    assert list(scratch.iterdir()) == []
    (event,) = deployment.captured_events()
    assert event["detail-type"] == "Diarization Succeeded"
    assert event["detail"]["output"]["json"] == f"s3://{deployment.bucket}/results/team a/réunion 1+2.m4a.json"


def test_s3_notification_invokes_directly(app: FunctionApp, deployment: Deployment, encoded_samples) -> None:
    upload(deployment, "audio/a.flac", encoded_samples["flac"].read_bytes())
    notification = json.loads(next(m for m in deployment.notifications(1) if "Records" in m["Body"])["Body"])
    response = app.lambda_handler(notification, LambdaContext())
    (outcome,) = response["outcomes"]
    assert outcome["status"] == "succeeded" and outcome["output"]["json"].endswith("results/a.flac.json")
    assert deployment.object_keys("results/") == ["results/a.flac.json", "results/a.flac.rttm"]


@pytest.mark.parametrize("encode_key", [False, True])
def test_eventbridge_object_created(
    app: FunctionApp, deployment: Deployment, encoded_samples, encode_key: bool
) -> None:
    key = "audio/x y/ü.ogg"
    upload(deployment, key, encoded_samples["ogg"].read_bytes())
    event = {
        "version": "0",
        "id": "1",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-25T00:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{deployment.bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": deployment.bucket},
            "object": {"key": "audio/x+y/%C3%BC.ogg" if encode_key else key, "size": 1},
            "reason": "PutObject",
        },
    }
    (outcome,) = app.lambda_handler(event, LambdaContext())["outcomes"]
    assert outcome["status"] == "succeeded", outcome
    assert "results/x y/ü.ogg.json" in deployment.object_keys("results/")


def test_direct_invocation_with_hints(app: FunctionApp, deployment: Deployment, encoded_samples) -> None:
    upload(deployment, "audio/call.wav", encoded_samples["wav"].read_bytes())
    outcome = app.lambda_handler(
        {"bucket": deployment.bucket, "key": "audio/call.wav", "num_speakers": 2}, LambdaContext()
    )
    assert outcome["status"] == "succeeded" and outcome["speaker_count"] == 2
    assert outcome["duration_seconds"] == pytest.approx(30.0, abs=0.01)
    assert deployment.get_json("results/call.wav.json")["parameters"]["num_speakers"] == 2


@pytest.mark.parametrize(
    ("key", "reason"),
    [("results/loop.wav", "output prefix"), ("elsewhere/x.wav", "outside the input prefix"), ("audio/", "folder")],
)
def test_objects_that_are_not_inputs_are_skipped(
    app: FunctionApp, deployment: Deployment, encoded_samples, key: str, reason: str
) -> None:
    upload(deployment, key, encoded_samples["wav"].read_bytes())
    outcome = app.lambda_handler({"bucket": deployment.bucket, "key": key}, LambdaContext())
    assert outcome["status"] == "skipped" and reason in outcome["reason"]
    assert [k for k in deployment.object_keys() if k != key] == []


def header_only_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16_000)
    return buffer.getvalue()


ERROR_SCHEMA = load_schema("error-v1.json")


def error_object(deployment: Deployment, name: str) -> dict[str, Any]:
    body = deployment.get_json(f"results/{name}.error.json")
    jsonschema.validate(body, ERROR_SCHEMA)
    assert body["input"]["uri"] == f"s3://{deployment.bucket}/audio/{name}"
    return body


def test_bad_file_and_poison_message_do_not_fail_their_neighbours(
    app: FunctionApp, deployment: Deployment, encoded_samples
) -> None:
    upload(deployment, "audio/good.mp3", encoded_samples["mp3"].read_bytes())
    upload(deployment, "audio/garbage.wav", os.urandom(5000))
    messages = deployment.notifications(2)
    event = deployment.sqs_event(messages)
    poison = dict(event["Records"][0], messageId="poison-1", body="{not json")
    event["Records"].insert(1, poison)
    context = LambdaContext()

    response = app.lambda_handler(event, context)

    assert response == {"batchItemFailures": [{"itemIdentifier": "poison-1"}]}
    assert deployment.get_json("results/good.mp3.json")["audio"]["original"]["codec"] == "mp3float"
    body = error_object(deployment, "garbage.wav")
    assert body["error"]["code"] == "INVALID_AUDIO" and body["request_id"] == context.aws_request_id
    assert "results/garbage.wav.json" not in deployment.object_keys()
    kinds = sorted(event["detail-type"] for event in deployment.captured_events())
    assert kinds == ["Diarization Failed", "Diarization Succeeded"]


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"", "EMPTY_AUDIO"), (b"plain text, not audio\n" * 50, "INVALID_AUDIO")],
)
def test_bad_inputs_write_error_objects(app: FunctionApp, deployment: Deployment, data: bytes, code: str) -> None:
    upload(deployment, "audio/bad.wav", data)
    outcome = app.lambda_handler({"bucket": deployment.bucket, "key": "audio/bad.wav"}, LambdaContext())
    assert outcome["status"] == "failed" and outcome["error"]["code"] == code
    assert outcome["error"]["location"] == f"s3://{deployment.bucket}/results/bad.wav.error.json"
    assert error_object(deployment, "bad.wav")["error"]["code"] == code


def test_core_bad_inputs_through_sqs(app: FunctionApp, deployment: Deployment, encoded_samples, tmp_path: Path) -> None:
    """Every bad input of the core arrives through the real notification path and ends as an error object."""
    mp3 = encoded_samples["mp3"].read_bytes()
    nan = speech_like(2.0)
    nan[100] = float("nan")
    cases = {
        "truncated.mp3": (mp3[: len(mp3) // 2], "INVALID_AUDIO"),
        "nan.wav": (write_float_wav(nan, 16_000, tmp_path / "nan.wav").read_bytes(), "INVALID_AUDIO"),
        "header-only.wav": (header_only_wav(), "EMPTY_AUDIO"),
        "notes.txt": (b"meeting notes\n" * 40, "INVALID_AUDIO"),
    }
    for name, (data, _) in cases.items():
        upload(deployment, f"audio/{name}", data)
    response = app.lambda_handler(deployment.sqs_event(deployment.notifications(len(cases))), LambdaContext())
    assert response == {"batchItemFailures": []}
    for name, (_, code) in cases.items():
        assert error_object(deployment, name)["error"]["code"] == code


def test_invalid_hints_in_a_direct_invocation(app: FunctionApp, deployment: Deployment, encoded_samples) -> None:
    upload(deployment, "audio/h.wav", encoded_samples["wav"].read_bytes())
    outcome = app.lambda_handler(
        {"bucket": deployment.bucket, "key": "audio/h.wav", "min_speakers": 3, "max_speakers": 2}, LambdaContext()
    )
    assert outcome["error"]["code"] == "INVALID_PARAMETER"
    assert error_object(deployment, "h.wav")["error"]["message"].startswith("min_speakers=3")


def test_object_deleted_before_processing(app: FunctionApp, deployment: Deployment, encoded_samples) -> None:
    upload(deployment, "audio/gone.wav", encoded_samples["wav"].read_bytes())
    messages = deployment.notifications(1)
    deployment.s3.delete_object(Bucket=deployment.bucket, Key="audio/gone.wav")
    assert app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
    assert error_object(deployment, "gone.wav")["error"]["code"] == "INPUT_NOT_FOUND"


def test_oversize_is_rejected_from_head_object_before_download(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path, encoded_samples
) -> None:
    """The scratch folder does not exist: any download attempt would fail loudly."""
    app = make_app(deployment, tiny_model_dir, tmp_path / "does-not-exist", MAX_AUDIO_BYTES="1000")
    upload(deployment, "audio/big.wav", encoded_samples["wav"].read_bytes())
    outcome = app.lambda_handler({"bucket": deployment.bucket, "key": "audio/big.wav"}, LambdaContext())
    assert outcome["error"]["code"] == "AUDIO_TOO_LARGE"
    assert error_object(deployment, "big.wav")["error"]["details"]["max_bytes"] == 1000


def test_duplicate_delivery_runs_the_pipeline_once(app: FunctionApp, deployment: Deployment, encoded_samples) -> None:
    upload(deployment, "audio/dup.opus", encoded_samples["opus"].read_bytes())
    event = deployment.sqs_event(deployment.notifications(1))
    assert app.idempotency_config is not None
    app.idempotency_config.register_lambda_context(LambdaContext())
    first = app.process(*_items(event), LambdaContext())
    before = deployment.s3.head_object(Bucket=deployment.bucket, Key="results/dup.opus.json")["LastModified"]
    second = app.process(*_items(event), LambdaContext())
    assert second == first  # same timings: the stored outcome, not a second run
    after = deployment.s3.head_object(Bucket=deployment.bucket, Key="results/dup.opus.json")["LastModified"]
    assert after == before
    assert len(deployment.captured_events()) == 1
    assert boto3.client("dynamodb").scan(TableName=deployment.idempotency_table)["Count"] == 1


def _items(event: dict[str, Any]) -> list[Any]:
    from diarization.aws.events import from_sqs_body

    return [item for record in event["Records"] for item in from_sqs_body(record["body"])]


def test_same_key_new_content_is_processed_again(app: FunctionApp, deployment: Deployment, encoded_samples) -> None:
    upload(deployment, "audio/v.wav", b"garbage" * 100)
    app.lambda_handler({"bucket": deployment.bucket, "key": "audio/v.wav"}, LambdaContext())
    assert "results/v.wav.error.json" in deployment.object_keys()
    upload(deployment, "audio/v.wav", encoded_samples["wav"].read_bytes())
    outcome = app.lambda_handler({"bucket": deployment.bucket, "key": "audio/v.wav"}, LambdaContext())
    assert outcome["status"] == "succeeded"
    assert deployment.object_keys("results/") == ["results/v.wav.json", "results/v.wav.rttm"]  # stale error removed


def test_version_in_the_event_is_the_version_processed(
    moto_endpoint: str, tiny_model_dir: Path, scratch: Path, encoded_samples
) -> None:
    """Each event reads the version it names; the older one's outcome is not published over the newer one's."""
    deployment = create_deployment(versioned=True)
    app = make_app(deployment, tiny_model_dir, scratch)
    first = deployment.s3.put_object(
        Bucket=deployment.bucket, Key="audio/ver.wav", Body=encoded_samples["wav"].read_bytes()
    )
    second = deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/ver.wav", Body=b"overwritten with garbage")
    event = {"bucket": deployment.bucket, "key": "audio/ver.wav"}
    newer = app.lambda_handler({**event, "version_id": second["VersionId"]}, LambdaContext())
    assert newer["status"] == "failed" and newer["version_id"] == second["VersionId"]
    older = app.lambda_handler({**event, "version_id": first["VersionId"]}, LambdaContext())
    assert older["status"] == "skipped" and older["reason"].startswith("superseded")
    assert error_object(deployment, "ver.wav")["input"]["version_id"] == second["VersionId"]


def test_a_late_event_processes_the_current_version_once(
    app: FunctionApp, deployment: Deployment, encoded_samples, caplog: pytest.LogCaptureFixture
) -> None:
    """The first upload's event arrives after an overwrite: its ETag is stale, so the current version is
    processed, and the overwrite's own event finds that run already done (same idempotency key)."""
    upload(deployment, "audio/etag.wav", encoded_samples["wav"].read_bytes())
    late = deployment.notifications(1)
    upload(deployment, "audio/etag.wav", encoded_samples["flac"].read_bytes())
    own = deployment.notifications(1)
    current = deployment.s3.head_object(Bucket=deployment.bucket, Key="audio/etag.wav")["ETag"].strip('"')
    stale = events.from_sqs_body(next(m["Body"] for m in late if '"Records"' in m["Body"]))[0].ref.etag
    assert stale and stale != current

    assert app.lambda_handler(deployment.sqs_event(late), LambdaContext()) == {"batchItemFailures": []}
    assert deployment.get_json("results/etag.wav.json")["audio"]["original"]["codec"] == "flac"
    assert stale_etag_warnings(caplog) == [(stale, current)]
    (event,) = deployment.captured_events()
    assert event["detail-type"] == "Diarization Succeeded" and event["detail"]["etag"] == current

    assert app.lambda_handler(deployment.sqs_event(own), LambdaContext()) == {"batchItemFailures": []}
    assert deployment.captured_events() == []  # the stored outcome: no second run
    assert boto3.client("dynamodb").scan(TableName=deployment.idempotency_table)["Count"] == 1


def stale_etag_warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(event ETag, current ETag) of each "stale ETag" warning the function logged."""
    return [
        (record.event_etag, record.current_etag)
        for record in caplog.records
        if record.getMessage() == "the event's ETag is stale; processing the current version"
    ]


def test_a_placeholder_etag_is_not_a_reason_to_fail(
    app: FunctionApp, deployment: Deployment, encoded_samples, caplog: pytest.LogCaptureFixture
) -> None:
    """events/s3-put.json (what `sam local generate-event s3 put` makes) carries a made-up eTag."""
    event = json.loads((EVENTS / "s3-put.json").read_text())
    s3 = event["Records"][0]["s3"]
    placeholder = s3["object"]["eTag"]
    s3["bucket"]["name"] = deployment.bucket
    upload(deployment, "audio/meetings/weekly sync.m4a", encoded_samples["m4a"].read_bytes())
    current = deployment.s3.head_object(Bucket=deployment.bucket, Key="audio/meetings/weekly sync.m4a")["ETag"]

    (outcome,) = app.lambda_handler(event, LambdaContext())["outcomes"]

    assert outcome["status"] == "succeeded", outcome
    assert outcome["etag"] == current.strip('"') != placeholder
    assert "results/meetings/weekly sync.m4a.rttm" in deployment.object_keys("results/")
    assert stale_etag_warnings(caplog) == [(placeholder, current.strip('"'))]


class OverwritingStore(S3Store):
    """Overwrites the object right before reading it: a change between HeadObject and GetObject."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def download(self, ref: ObjectRef, path: Path) -> None:
        self.client.put_object(Bucket=ref.bucket, Key=ref.key, Body=self.data)
        super().download(ref, path)


def test_a_change_between_head_and_download_leaves_the_outputs_to_the_newer_version(
    app: FunctionApp, deployment: Deployment, encoded_samples, caplog: pytest.LogCaptureFixture
) -> None:
    """INPUT_CHANGED is about an older version: logged with both ETags, never written over the newer version's."""
    upload(deployment, "audio/race.wav", encoded_samples["wav"].read_bytes())
    read = deployment.s3.head_object(Bucket=deployment.bucket, Key="audio/race.wav")["ETag"].strip('"')
    app.diarize_object.store = OverwritingStore(encoded_samples["flac"].read_bytes())

    outcome = app.lambda_handler({"bucket": deployment.bucket, "key": "audio/race.wav"}, LambdaContext())

    now = deployment.s3.head_object(Bucket=deployment.bucket, Key="audio/race.wav")["ETag"].strip('"')
    assert read != now and outcome["status"] == "skipped" and outcome["reason"].startswith("superseded")
    assert deployment.object_keys("results/") == []
    (warning,) = [r for r in caplog.records if getattr(r, "error_code", None) == "INPUT_CHANGED"]
    assert read in warning.getMessage() and now in warning.getMessage()


def test_download_of_a_changed_object_directly(deployment: Deployment, tmp_path: Path) -> None:
    """The store alone, against moto's real If-Match: S3's 412 carries no ETag, so a fresh HEAD names it."""
    store = S3Store()
    upload(deployment, "audio/direct.wav", b"first version")
    _, exact = store.head(ObjectRef(deployment.bucket, "audio/direct.wav"))
    upload(deployment, "audio/direct.wav", b"second version")
    with pytest.raises(InputChangedError) as raised:
        store.download(exact, tmp_path / "x")
    now = deployment.s3.head_object(Bucket=deployment.bucket, Key="audio/direct.wav")["ETag"].strip('"')
    assert raised.value.details["expected_etag"] == exact.etag and raised.value.details["current_etag"] == now
    assert f"ETag {exact.etag} was expected, S3 now has {now}" in raised.value.message


def test_a_stale_etag_in_a_versioned_bucket_pins_the_version(
    moto_endpoint: str, tiny_model_dir: Path, scratch: Path, encoded_samples, caplog: pytest.LogCaptureFixture
) -> None:
    """No version id in the event: the current version is chosen and read by its id, so a later
    overwrite does not disturb the run."""
    deployment = create_deployment(versioned=True)
    app = make_app(deployment, tiny_model_dir, scratch)
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/pinned.wav", Body=encoded_samples["wav"].read_bytes())
    app.diarize_object.store = OverwritingStore(b"overwritten with garbage")
    event = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": deployment.bucket},
                    "object": {"key": "audio/pinned.wav", "eTag": "0123456789abcdef0123456789abcdef"},
                },
            }
        ]
    }
    (outcome,) = app.lambda_handler(event, LambdaContext())["outcomes"]
    # The pinned version was read and diarized; the overwrite is newer, so its own event publishes.
    assert outcome["status"] == "skipped" and outcome["reason"].startswith("superseded"), outcome
    (diarized,) = [r for r in caplog.records if r.getMessage() == "diarized"]
    assert diarized.published is False


def s3_through_sns(deployment: Deployment) -> str:
    """Re-wire the bucket as users do with fan-out: S3 -> SNS topic -> (SQS queue | Lambda). The queue's URL."""
    topic, inbox = topic_with_queue(f"{deployment.bucket}-uploads")
    deployment.s3.put_bucket_notification_configuration(
        Bucket=deployment.bucket,
        NotificationConfiguration={
            "TopicConfigurations": [
                {
                    "TopicArn": topic,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "audio/"}]}},
                }
            ]
        },
    )
    return inbox


def sns_deliveries(deployment: Deployment, inbox: str, expected: int = 1) -> list[dict[str, Any]]:
    """SQS messages holding SNS envelopes, until `expected` S3 notifications (besides s3:TestEvent) arrived."""
    messages: list[dict[str, Any]] = []
    for _ in range(20):
        messages += deployment.receive(inbox, wait=1)
        if sum("Records" in json.loads(json.loads(m["Body"])["Message"]) for m in messages) >= expected:
            return messages
    raise TimeoutError(f"{len(messages)} messages arrived, {expected} notification(s) expected")


def test_s3_to_sns_to_sqs(app: FunctionApp, deployment: Deployment, encoded_samples) -> None:
    inbox = s3_through_sns(deployment)
    upload(deployment, "audio/fan out.mp3", encoded_samples["mp3"].read_bytes())
    messages = sns_deliveries(deployment, inbox)
    envelopes = [json.loads(m["Body"]) for m in messages]
    assert {e["Type"] for e in envelopes} == {"Notification"}
    assert any("s3:TestEvent" in e["Message"] for e in envelopes)  # S3 sends one through SNS too

    response = app.lambda_handler(deployment.sqs_event(messages), LambdaContext())

    assert response == {"batchItemFailures": []}
    result = deployment.get_json("results/fan out.mp3.json")
    jsonschema.validate(result, SCHEMA)
    assert result["input"]["uri"] == f"s3://{deployment.bucket}/audio/fan out.mp3"
    rttm = deployment.s3.get_object(Bucket=deployment.bucket, Key="results/fan out.mp3.rttm")["Body"].read().decode()
    assert len(rttm.splitlines()) == len(result["segments"]) > 0


def test_s3_to_sns_to_lambda_next_to_a_gpu_completion(
    app: FunctionApp, deployment: Deployment, encoded_samples
) -> None:
    """The SNS event Lambda builds from what moto's topic published, plus a SageMaker failure notification:
    each record is handled by its own message (an S3 object diarized, a completion checked)."""
    inbox = s3_through_sns(deployment)
    upload(deployment, "audio/sns.ogg", encoded_samples["ogg"].read_bytes())
    event = sns_event(sns_deliveries(deployment, inbox))
    sagemaker = {
        "invocationStatus": "Failed",
        "failureReason": "ModelError: the container was stopped",
        "requestParameters": {"inputLocation": f"s3://{deployment.bucket}/audio/lost.wav"},
        "inferenceId": "abc",
        "eventSource": "aws:sagemaker",
    }
    event["Records"].append(
        {**event["Records"][-1], "Sns": {**event["Records"][-1]["Sns"], "Message": json.dumps(sagemaker)}}
    )

    succeeded, failed = app.lambda_handler(event, LambdaContext())["outcomes"]  # s3:TestEvent: no outcome

    assert succeeded["status"] == "succeeded" and succeeded["input"] == f"s3://{deployment.bucket}/audio/sns.ogg"
    jsonschema.validate(deployment.get_json("results/sns.ogg.json"), SCHEMA)
    assert "results/sns.ogg.rttm" in deployment.object_keys("results/")
    # Nothing was routed as "abc": the notification is not acted on (tests/test_faults_completion.py).
    assert failed["status"] == "skipped" and failed["reason"].startswith("untrusted completion")
    assert not [key for key in deployment.object_keys("results/") if "lost" in key]


def test_deadline_too_short(deployment: Deployment, tiny_model_dir: Path, scratch: Path, encoded_samples) -> None:
    app = make_app(deployment, tiny_model_dir, scratch, EXPECTED_REAL_TIME_FACTOR="1.0", DEADLINE_MARGIN_SECONDS="20")
    upload(deployment, "audio/long.wav", encoded_samples["wav"].read_bytes())
    outcome = app.lambda_handler(
        {"bucket": deployment.bucket, "key": "audio/long.wav"}, LambdaContext(remaining_seconds=40)
    )
    assert outcome["error"]["code"] == "AUDIO_TOO_LONG_FOR_LAMBDA"
    details = error_object(deployment, "long.wav")["error"]["details"]
    assert details["audio_seconds"] == pytest.approx(30.0) and details["remaining_seconds"] <= 40
    assert list(scratch.iterdir()) == []
    # with enough time left the same file goes through
    outcome = app.lambda_handler(
        {"bucket": deployment.bucket, "key": "audio/long.wav"}, LambdaContext(remaining_seconds=60)
    )
    assert outcome["status"] == "succeeded"


def test_unsupported_events_are_rejected(app: FunctionApp) -> None:
    from diarization.errors import InvalidRequestError, UnsupportedEventError

    with pytest.raises(UnsupportedEventError, match="Unsupported event"):
        app.lambda_handler({"hello": "world"}, LambdaContext())
    with pytest.raises(InvalidRequestError, match="Unknown field"):
        app.lambda_handler({"bucket": "b", "key": "audio/k.wav", "speakers": 2}, LambdaContext())


def test_metrics_in_embedded_metric_format(app: FunctionApp, deployment: Deployment, encoded_samples, capsys) -> None:
    upload(deployment, "audio/m.wav", encoded_samples["wav"].read_bytes())
    upload(deployment, "audio/m-bad.wav", b"junk" * 100)
    capsys.readouterr()
    app.lambda_handler({"bucket": deployment.bucket, "key": "audio/m.wav"}, LambdaContext())
    app.lambda_handler({"bucket": deployment.bucket, "key": "audio/m-bad.wav"}, LambdaContext())
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = {m["Name"] for doc in emf for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"AudioSeconds", "ProcessingSeconds", "RealTimeFactor", "SpeakersDetected", "Failures"} <= names
    failures = [doc for doc in emf if "Failures" in doc]
    assert failures and failures[0]["ErrorCode"] == "INVALID_AUDIO"
    assert all(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "DiarizationTest" for doc in emf)


def test_access_denied_is_an_error_object(iam_enforcing_s3, tiny_model_dir: Path, scratch: Path, monkeypatch) -> None:
    endpoint, credentials = iam_enforcing_s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the credentials it resolved first
    app = FunctionApp({**os.environ, "MODEL_DIR": str(tiny_model_dir), "INPUT_BUCKET": "locked-audio"})
    app.diarize_object.workdir = app.api.diarize_sync.workdir = scratch
    outcome = app.lambda_handler({"bucket": "locked-audio", "key": "audio/secret.wav"}, LambdaContext())
    assert outcome["status"] == "failed" and outcome["error"]["code"] == "ACCESS_DENIED"
    assert "s3:GetObject" in outcome["error"]["message"]
    assert outcome["error"]["location"] == "s3://locked-audio/results/secret.wav.error.json"
