"""Event shapes (including the committed events/*.json for `sam local invoke`), key mapping, settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from diarization.aws import events
from diarization.aws.settings import AwsSettings
from diarization.errors import (
    ConfigurationError,
    DiarizationError,
    InvalidParameterError,
    InvalidRequestError,
    UnsupportedEventError,
)
from diarization.service.locations import Locations, ObjectRef

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def test_committed_sample_events_parse() -> None:
    assert events.kind_of(load("s3-put.json")) == "s3"
    (item,) = events.from_s3_notification(load("s3-put.json"))
    assert item.ref == ObjectRef(
        "example-audio-bucket", "audio/meetings/weekly sync.m4a", None, "0123456789abcdef0123456789abcdef"
    )

    sqs = load("sqs-s3-notification.json")
    assert events.kind_of(sqs) == "sqs"
    assert events.from_sqs_body(sqs["Records"][0]["body"])[0].ref.key == "audio/meetings/weekly sync.m4a"

    eventbridge = load("eventbridge-object-created.json")
    assert events.kind_of(eventbridge) == "eventbridge"
    (item,) = events.from_eventbridge(eventbridge)
    assert item.ref.key == "audio/interview.mp3" and item.key_may_be_encoded

    direct = load("direct.json")
    assert events.kind_of(direct) == "direct"
    assert events.from_direct(direct)[0].hints == {"num_speakers": 2}

    assert events.kind_of(load("api-create-job.json")) == "api"


def work_of(event: dict[str, Any]) -> tuple[list[events.ObjectRequest], list[dict[str, Any]]]:
    """What the function would do with an event: the objects to process and the GPU completions."""
    kind = events.kind_of(event)
    if kind == "sqs":
        # from_dead_letter_body reads work-queue bodies as from_sqs_body does, and on-failure records too
        return [item for record in event["Records"] for item in events.from_dead_letter_body(record["body"])], []
    if kind == "sns":
        work = [events.from_sns_record(record) for record in event["Records"]]
        return [item for w in work for item in w.items], [w.completion for w in work if w.completion is not None]
    parse = {"s3": events.from_s3_notification, "eventbridge": events.from_eventbridge, "direct": events.from_direct}
    return parse[kind](event), []


@pytest.mark.parametrize("name", sorted(path.name for path in EVENTS.glob("*.json")))
def test_every_sample_event_is_understood(name: str) -> None:
    event = load(name)
    if name.startswith("api-"):
        assert events.kind_of(event) == "api"
        return
    items, completions = work_of(event)
    if name == "sagemaker-completion.json":
        assert items == []
        (completion,) = completions
        assert completion["invocationStatus"] == "Completed" and completion["inferenceId"] == "example-inference"
        assert completion["requestParameters"]["inputLocation"] == "s3://example-audio-bucket/audio/interview.mp3"
        assert completion["responseParameters"]["outputLocation"].startswith("s3://example-audio-bucket/async-output/")
    else:
        assert completions == []
        assert [item.ref.bucket for item in items] == ["example-audio-bucket"]


TOPIC = "arn:aws:sns:us-east-1:123456789012:uploads"


def s3_notification(key: str = "audio/a+b.wav", etag: str | None = "abc") -> dict[str, Any]:
    obj = {"key": key, "size": 10, **({"eTag": etag} if etag else {})}
    record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": obj}}
    return {"Records": [record]}


SAGEMAKER = {
    "invocationStatus": "Completed",
    "requestParameters": {"inputLocation": "s3://b/audio/long.wav"},
    "responseParameters": {"outputLocation": "s3://b/async-output/x.out"},
    "inferenceId": "i-1",
    "eventSource": "aws:sagemaker",
}


def sns_record(message: object, kind: str = "Notification") -> dict[str, Any]:
    text = message if isinstance(message, str) else json.dumps(message)
    return {"EventSource": "aws:sns", "Sns": {"Type": kind, "TopicArn": TOPIC, "Message": text}}


def sns_envelope(message: object, kind: str = "Notification") -> str:
    """An SQS body from an SNS subscription without raw message delivery."""
    text = message if isinstance(message, str) else json.dumps(message)
    return json.dumps({"Type": kind, "MessageId": "m-1", "TopicArn": TOPIC, "Message": text, "Timestamp": "t"})


def test_s3_notifications_through_sns_to_lambda() -> None:
    work = events.from_sns_record(sns_record(s3_notification()))
    assert work.completion is None
    assert [item.ref for item in work.items] == [ObjectRef("b", "audio/a b.wav", None, "abc")]
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}
    assert events.from_sns_record(sns_record(test_event)) == events.SnsWork()


def test_sagemaker_completions_are_told_apart_by_their_message() -> None:
    event = {"Records": [sns_record(SAGEMAKER), sns_record(s3_notification())]}
    assert events.kind_of(event) == "sns"
    first, second = (events.from_sns_record(record) for record in event["Records"])
    assert first == events.SnsWork(completion=SAGEMAKER)
    assert second.completion is None and second.items[0].ref.key == "audio/a b.wav"
    # without eventSource, SageMaker's own fields are enough
    bare = {k: v for k, v in SAGEMAKER.items() if k != "eventSource"}
    assert events.from_sns_record(sns_record(bare)).completion == bare


def on_failure_record(payload: object) -> str:
    """What Lambda's on-failure destination puts on the dead-letter queue for a failed asynchronous invocation."""
    return json.dumps(
        {
            "version": "1.0",
            "requestContext": {
                "requestId": "r-1",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
            },
            "requestPayload": payload,
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "Task timed out after 900.00 seconds"},
        }
    )


def test_the_dead_letter_queue_holds_sqs_messages_and_on_failure_records() -> None:
    job = {"bucket": "b", "key": "audio/x.wav", "job_id": "j-1"}
    (plain,) = events.from_dead_letter_body(json.dumps(job))
    assert plain.ref == ObjectRef("b", "audio/x.wav") and plain.job_id == "j-1"

    sns = {"Records": [sns_record(s3_notification()), sns_record(SAGEMAKER)]}
    s3_item, completion_input = events.from_dead_letter_body(on_failure_record(sns))
    assert s3_item.ref == ObjectRef("b", "audio/a b.wav", None, "abc")
    assert completion_input.ref == ObjectRef("b", "audio/long.wav") and completion_input.job_id is None

    assert [i.ref.key for i in events.from_dead_letter_body(on_failure_record(s3_notification()))] == ["audio/a b.wav"]
    (direct,) = events.from_dead_letter_body(on_failure_record(job))
    assert direct == plain
    bridge = {"source": "aws.s3", "detail-type": "Object Created"}
    bridge["detail"] = {"bucket": {"name": "b"}, "object": {"key": "audio/y.wav"}}  # type: ignore[assignment]
    assert [i.ref.key for i in events.from_dead_letter_body(on_failure_record(bridge))] == ["audio/y.wav"]


@pytest.mark.parametrize(
    ("payload", "error", "fragment"),
    [
        ({"version": "2.0", "routeKey": "GET /", "requestContext": {}}, UnsupportedEventError, "failed api invocation"),
        ({"Records": [sns_record({**SAGEMAKER, "requestParameters": {}})]}, InvalidRequestError, "names no input"),
        (
            {"Records": [sns_record({**SAGEMAKER, "requestParameters": {"inputLocation": "s3://b"}})]},
            InvalidRequestError,
            "names no input",
        ),
        ({"surprise": 1}, UnsupportedEventError, "Unsupported event"),
    ],
)
def test_on_failure_records_that_are_not_work(payload: object, error: type[DiarizationError], fragment: str) -> None:
    """They fail the dead-letter batch item: the queue's redrive policy parks them for a person."""
    with pytest.raises(error, match=fragment):
        events.from_dead_letter_body(on_failure_record(payload))


def test_s3_notifications_through_sns_to_sqs() -> None:
    (item,) = events.from_sqs_body(sns_envelope(s3_notification(etag=None)))
    assert item.ref == ObjectRef("b", "audio/a b.wav")
    assert events.from_sqs_body(sns_envelope({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})) == []
    # raw message delivery: the body is the notification itself
    assert events.from_sqs_body(json.dumps(s3_notification()))[0].ref.key == "audio/a b.wav"


def test_a_sagemaker_completion_through_sqs_is_refused() -> None:
    with pytest.raises(UnsupportedEventError, match="protocol lambda") as raised:
        events.from_sqs_body(sns_envelope(SAGEMAKER))
    assert raised.value.code == "UNSUPPORTED_EVENT" and raised.value.details["topic_arn"] == TOPIC


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_subscription_confirmations_are_not_work(kind: str) -> None:
    text = "You have chosen to subscribe to the topic. To confirm the subscription, visit the SubscribeURL."
    with pytest.raises(UnsupportedEventError, match=f"SNS {kind} for {TOPIC}.*confirm-subscription"):
        events.from_sqs_body(sns_envelope(text, kind))
    with pytest.raises(UnsupportedEventError, match=f"SNS {kind}"):
        events.from_sns_record(sns_record(text, kind))


@pytest.mark.parametrize(
    ("message", "error", "fragment"),
    [
        ("{not json", InvalidRequestError, "is not JSON"),
        ("[" * 100_000, InvalidRequestError, "is not JSON: the JSON is nested too deeply"),
        ("[1, 2]", InvalidRequestError, "not a JSON object"),
        (None, InvalidRequestError, "no 'Message' string"),
        ({"hello": 1}, UnsupportedEventError, "neither an S3 event notification nor"),
    ],
)
def test_malformed_sns_messages(message: object, error: type[DiarizationError], fragment: str) -> None:
    record = sns_record("" if message is None else message)
    if message is None:
        del record["Sns"]["Message"]
    with pytest.raises(error, match=fragment) as raised:
        events.from_sns_record(record)
    assert raised.value.code == error.code
    assert raised.value.details == {"topic_arn": TOPIC}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "INVALID_REQUEST"),
        ("[" * 100_000, "INVALID_REQUEST"),
        ("[1]", "INVALID_REQUEST"),
        ({"a": 1}, "UNSUPPORTED_EVENT"),
    ],
)
def test_malformed_sns_envelopes_in_sqs(message: object, code: str) -> None:
    with pytest.raises((InvalidRequestError, UnsupportedEventError)) as raised:
        events.from_sqs_body(sns_envelope(message))
    assert raised.value.code == code and TOPIC in raised.value.message


def test_an_sns_record_without_its_sns_object() -> None:
    with pytest.raises(InvalidRequestError, match="without an 'Sns' object"):
        events.from_sns_record({"EventSource": "aws:sns"})


def test_s3_keys_are_url_decoded() -> None:
    notification = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "audio/a+b%2Bc/%C3%A9t%C3%A9.wav"}},
            }
        ]
    }
    assert events.from_s3_notification(notification)[0].ref.key == "audio/a b+c/été.wav"


def test_test_events_and_deletions_are_ignored() -> None:
    assert events.from_sqs_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})) == []
    deletion = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectRemoved:Delete",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "audio/x.wav"}},
            }
        ]
    }
    assert events.from_s3_notification(deletion) == []


@pytest.mark.parametrize("event", [{}, {"Records": []}, [], "text", {"source": "aws.ec2"}, {"bucket": "b"}])
def test_unknown_shapes(event: object) -> None:
    with pytest.raises(UnsupportedEventError):
        events.kind_of(event)


@pytest.mark.parametrize("body", ["not json", "[1]", json.dumps({"hello": 1})])
def test_bad_sqs_bodies(body: str) -> None:
    with pytest.raises((InvalidRequestError, UnsupportedEventError)):
        events.from_sqs_body(body)


def test_direct_event_validation() -> None:
    with pytest.raises(InvalidRequestError, match="Unknown field"):
        events.from_direct({"bucket": "b", "key": "k", "extra": 1})
    with pytest.raises(InvalidRequestError, match="non-empty strings"):
        events.from_direct({"bucket": "b", "key": ""})


def test_result_locations_keep_sub_folders() -> None:
    locations = Locations(AwsSettings(input_bucket="in", output_bucket="out"))
    outputs = locations.outputs(ObjectRef("in", "audio/a/b/c d.wav"))
    assert (outputs.bucket, outputs.json_key, outputs.rttm_key, outputs.error_key) == (
        "out",
        "results/a/b/c d.wav.json",
        "results/a/b/c d.wav.rttm",
        "results/a/b/c d.wav.error.json",
    )


def test_no_loop_even_with_an_empty_input_prefix() -> None:
    locations = Locations(AwsSettings(input_bucket="b", input_prefix=""))
    assert locations.skip_reason(ObjectRef("b", "results/x.wav.json")) is not None
    assert locations.skip_reason(ObjectRef("b", "x.wav")) is None


def test_output_bucket_objects_are_never_inputs() -> None:
    locations = Locations(AwsSettings(input_bucket="in", output_bucket="out", input_prefix=""))
    assert locations.skip_reason(ObjectRef("out", "anything.wav")) == "in the output bucket"


def test_job_ids_come_from_upload_keys() -> None:
    locations = Locations(AwsSettings(input_bucket="b"))
    assert locations.job_id_of_upload(ObjectRef("b", "audio/uploads/abc123/x.wav")) == "abc123"
    assert locations.job_id_of_upload(ObjectRef("b", "audio/uploads/abc123")) is None
    assert locations.job_id_of_upload(ObjectRef("b", "audio/other/x.wav")) is None


@pytest.mark.parametrize(
    "uri",
    [
        "s3://b/audio/../x.wav",
        "s3://b/audio//x.wav",
        "s3://b/audio/./x.wav",
        "s3://b/audio/x\\y.wav",
        "s3://b/audio/x\x00.wav",
        "s3://b",
        "s3:///audio/x.wav",
        "s3://b/audio/x.wav?versionId=1",
        "http://b/audio/x",
    ],
)
def test_unsafe_or_malformed_uris(uri: str) -> None:
    with pytest.raises(InvalidParameterError):
        Locations(AwsSettings(input_bucket="b")).parse_input_uri(uri)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"INPUT_PREFIX": "results/sub/"}, "lies inside OUTPUT_PREFIX"),
        ({"INPUT_PREFIX": "x/", "OUTPUT_PREFIX": "x/"}, "lies inside OUTPUT_PREFIX"),
        ({"OUTPUT_PREFIX": ""}, "must not be empty"),
        ({"OUTPUT_PREFIX": "/results/"}, "leading slash"),
        ({"EXPECTED_REAL_TIME_FACTOR": "fast"}, "not a number"),
        ({"DEADLINE_MARGIN_SECONDS": "-1"}, "at least 0"),
        ({"SAGEMAKER_ENDPOINT_NAME": "gpu"}, "SAGEMAKER_ENDPOINT_NAME is set without JOBS_TABLE"),
        ({"JOB_DEADLINE_SECONDS": "10"}, "JOB_DEADLINE_SECONDS=10 must be at least 60"),
        ({"GPU_DEADLINE_SECONDS": "soon"}, "GPU_DEADLINE_SECONDS='soon' is not a number"),
    ],
)
def test_invalid_deployment_settings(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        AwsSettings.from_env(env)


def test_separate_output_bucket_may_reuse_the_prefix_layout() -> None:
    settings = AwsSettings.from_env({"INPUT_BUCKET": "in", "OUTPUT_BUCKET": "out", "INPUT_PREFIX": "results/"})
    assert settings.output_bucket == "out"


def test_json_nested_too_deeply_is_a_callers_mistake_wherever_it_arrives() -> None:
    """`json.loads("[" * 100000)` raises RecursionError, not ValueError: uncaught, it was a 500."""
    from diarization.sagemaker.server import _json_object

    deep = "[" * 100_000
    for parse in (events.from_sqs_body, events.from_dead_letter_body, lambda text: _json_object(text.encode())):
        with pytest.raises(InvalidRequestError, match="nested too deeply") as raised:
            parse(deep)
        assert raised.value.code == "INVALID_REQUEST" and raised.value.http_status == 400
