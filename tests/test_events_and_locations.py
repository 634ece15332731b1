"""Event shapes (including the committed events/*.json for `sam local invoke`), key mapping, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diarization.aws import events
from diarization.aws.locations import Locations, ObjectRef
from diarization.aws.settings import AwsSettings
from diarization.errors import ConfigurationError, InvalidParameterError, InvalidRequestError, UnsupportedEventError

EVENTS = Path(__file__).resolve().parents[1] / "events"


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
    ],
)
def test_invalid_deployment_settings(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        AwsSettings.from_env(env)


def test_separate_output_bucket_may_reuse_the_prefix_layout() -> None:
    settings = AwsSettings.from_env({"INPUT_BUCKET": "in", "OUTPUT_BUCKET": "out", "INPUT_PREFIX": "results/"})
    assert settings.output_bucket == "out"
