"""Output names that cannot collide, and key limits in UTF-8 bytes: the mapping and the use cases against in-memory
ports (no AWS of any kind). The moto scenarios are in test_faults_names.py."""

from __future__ import annotations

import hashlib
import itertools
import logging
from pathlib import Path

import pytest

from diarization.aws.settings import AwsSettings
from diarization.core.engine import Diarizer
from diarization.errors import ConfigurationError, InputNameReservedError, InvalidParameterError, KeyTooLongError
from diarization.outputs.formats import OUTPUT_FORMATS
from diarization.service.locations import (
    LONGEST_SUFFIX,
    MAX_KEY_BYTES,
    Locations,
    ObjectRef,
    check_safe_name,
)
from diarization.service.model import Invocation, ObjectRequest
from diarization.service.outcomes import Failed, Skipped, Succeeded
from support.service import BUCKET, Service, make_service, request

log = logging.getLogger("tests.names")
LOCATIONS = Locations(AwsSettings(input_bucket=BUCKET))
LONGEST_NAME = MAX_KEY_BYTES - len("results/") - len(LONGEST_SUFFIX)
"""1,000 bytes: the longest name whose every output key (the longest: `.pyannoteai.json`) fits, default prefixes."""
FITS = "aa" + "é" * 499
"""1,000 bytes, 501 characters."""
OVER = "a" + "é" * 500
"""1,001 bytes, 501 characters: its error object still fits at its own key."""
KEY_1024 = "audio/" + "k" * (MAX_KEY_BYTES - len("audio/"))
"""The longest key S3 takes; its error object would be 1,037 bytes."""


def fallback_key(key: str) -> str:
    return f"results/_key-too-long/{hashlib.sha256(key.encode()).hexdigest()}.error.json"


TRICKY_NAMES = [
    "x.wav",
    "x.wav.error",
    "x.wav.error.error",
    "x.wav.json",
    "x.wav.rttm",
    "x.wav.pyannote",
    "x.wav.pyannoteai",
    "x.wav.pyannote.json",
    "x.wav.srt",
    "x.wav.error.json",
    "x.wav.json.error",
    "x",
    "x.error",
    ".error",
    "x.ERROR",
    "réunion 会議 🎙.wav",
    "réunion 会議 🎙.wav.error",
    "uploads/0123/x.wav",
    "uploads/0123/x.wav.error",
    "_key-too-long",
    "_key-too-long.wav",
    f"_key-too-long/{hashlib.sha256(KEY_1024.encode()).hexdigest()}",
    f"_key-too-long/{hashlib.sha256(KEY_1024.encode()).hexdigest()}.error",
    "a/_key-too-long/x.wav",
    FITS,
    OVER,
    OVER + ".error",
    "é" * 503,  # 1,006 bytes: not even its error object fits
    "a" * (LONGEST_NAME - 6) + ".error",  # fits, reserved
    "é" * 880,  # 1,760 bytes: no S3 key at all
    KEY_1024.removeprefix("audio/"),
]


def keys_of(name: str) -> set[str]:
    """Every output key the input may ever write."""
    ref = ObjectRef(BUCKET, "audio/" + name)
    if LOCATIONS.refusal(ref) is None:
        outputs = LOCATIONS.outputs(ref)
        return {outputs.json_key, *outputs.format_keys.values(), outputs.error_key}
    return {LOCATIONS.error_location(ref).error_key}


def test_no_two_inputs_share_an_output_key_and_every_key_fits() -> None:
    assert len(set(TRICKY_NAMES)) == len(TRICKY_NAMES)
    for first, second in itertools.combinations(TRICKY_NAMES, 2):
        assert not keys_of(first) & keys_of(second), (first[:40], second[:40])
    for name in TRICKY_NAMES:
        assert all(len(key.encode()) <= MAX_KEY_BYTES for key in keys_of(name)), name[:40]
        assert all(key.startswith("results/") for key in keys_of(name))


@pytest.mark.parametrize(
    ("name", "refusal", "error_key"),
    [
        ("x.wav", None, "results/x.wav.error.json"),
        ("x.wav.error", InputNameReservedError, "results/x.wav.error.error.json"),
        ("x.wav.error.error", InputNameReservedError, "results/x.wav.error.error.error.json"),
        ("x.ERROR", None, "results/x.ERROR.error.json"),  # S3 keys are case-sensitive: no collision
        ("_key-too-long/x.wav", InputNameReservedError, fallback_key("audio/_key-too-long/x.wav")),
        ("x.wav.pyannote", InputNameReservedError, "results/x.wav.pyannote.error.json"),
        ("x.wav.pyannoteai", InputNameReservedError, "results/x.wav.pyannoteai.error.json"),
        (FITS, None, f"results/{FITS}.error.json"),
        (OVER, KeyTooLongError, f"results/{OVER}.error.json"),
        ("é" * 503, KeyTooLongError, fallback_key("audio/" + "é" * 503)),
        ("é" * 880, KeyTooLongError, fallback_key("audio/" + "é" * 880)),
        (KEY_1024.removeprefix("audio/"), KeyTooLongError, fallback_key(KEY_1024)),
    ],
)
def test_where_each_name_fails(name: str, refusal: type[Exception] | None, error_key: str) -> None:
    ref = ObjectRef(BUCKET, "audio/" + name)
    got = LOCATIONS.refusal(ref)
    assert (type(got) if got else None) is refusal
    location = LOCATIONS.error_location(ref)
    assert location.error_key == error_key
    if refusal is not None:
        assert location.results == ()  # its result keys would be another input's: a failure deletes nothing
        with pytest.raises(refusal):
            LOCATIONS.outputs(ref)
    else:
        assert len(location.results) == 1 + len(OUTPUT_FORMATS)  # a failure removes the result in every format


def test_the_boundary_is_counted_in_utf8_bytes() -> None:
    fits, over = FITS, OVER
    assert len(fits) == len(over)
    assert LOCATIONS.refusal(ObjectRef(BUCKET, "audio/" + fits)) is None
    error = LOCATIONS.refusal(ObjectRef(BUCKET, "audio/" + over))
    assert isinstance(error, KeyTooLongError) and error.code == "KEY_TOO_LONG" and error.http_status == 400
    assert error.details["key_bytes"] == MAX_KEY_BYTES + 1 and error.details["max_bytes"] == MAX_KEY_BYTES
    assert "at most 1000 bytes" in error.message


def test_an_input_key_over_the_limit_keeps_its_natural_error_key_when_that_fits() -> None:
    """A long input prefix and a short output prefix: the input key cannot exist in S3, its error object can."""
    locations = Locations(AwsSettings(input_bucket=BUCKET, input_prefix="i" * 100 + "/", output_prefix="r/"))
    ref = ObjectRef(BUCKET, "i" * 100 + "/" + "n" * 990)
    error = locations.refusal(ref)
    assert isinstance(error, KeyTooLongError) and error.details["key_bytes"] == 1091
    assert locations.error_location(ref).error_key == "r/" + "n" * 990 + ".error.json"


def test_safe_names_are_limited_in_bytes_not_characters() -> None:
    assert check_safe_name("a" * 1000, "filename")  # the old 900-character rule is gone
    assert check_safe_name("é" * 512, "filename")  # exactly 1,024 bytes
    with pytest.raises(KeyTooLongError, match="1026 bytes"):
        check_safe_name("é" * 513, "filename")
    with pytest.raises(InvalidParameterError, match="not a safe object name"):
        check_safe_name("a/../b", "filename")


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("s3://audio/audio/x.wav.error", InputNameReservedError),
        ("s3://audio/audio/_key-too-long/abc", InputNameReservedError),
        (f"s3://audio/{KEY_1024}", KeyTooLongError),
        ("s3://audio/audio/" + "é" * 880, KeyTooLongError),
    ],
)
def test_api_uris_with_refused_names(uri: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        LOCATIONS.parse_input_uri(uri)


def test_an_output_prefix_too_long_for_the_fallback_is_a_configuration_error() -> None:
    assert Locations(AwsSettings(output_prefix="r" * (MAX_KEY_BYTES - 89)))
    with pytest.raises(ConfigurationError, match="OUTPUT_PREFIX"):
        Locations(AwsSettings(output_prefix="r" * (MAX_KEY_BYTES - 88)))


@pytest.mark.parametrize("first", ["x.wav", "x.wav.error"])
def test_colliding_names_both_keep_their_outcomes(service: Service, encoded_samples, first: str) -> None:
    audio = encoded_samples["wav"].read_bytes()
    for name in ("x.wav", "x.wav.error"):
        service.store.put(BUCKET, f"audio/{name}", audio)
    second = "x.wav.error" if first == "x.wav" else "x.wav"

    outcomes = {name: service.diarize_object(request(f"audio/{name}"), Invocation()) for name in (first, second)}

    assert isinstance(outcomes["x.wav"], Succeeded)
    reserved = outcomes["x.wav.error"]
    assert isinstance(reserved, Failed) and reserved.error["code"] == "INPUT_NAME_RESERVED"
    assert reserved.error["location"] == f"s3://{BUCKET}/results/x.wav.error.error.json"
    assert service.store.keys(BUCKET, "results/") == [
        "results/x.wav.error.error.json",
        "results/x.wav.json",
        "results/x.wav.rttm",
    ]
    error_object = service.store.get_json(BUCKET, "results/x.wav.error.error.json")
    assert error_object["input"]["uri"] == f"s3://{BUCKET}/audio/x.wav.error"
    assert error_object["input"]["etag"] is not None  # pinned: it describes the version it refused
    assert sorted(event["status"] for event in service.notifier.published) == ["failed", "succeeded"]


def test_a_failure_of_the_plain_name_keeps_the_reserved_names_error_object(service: Service) -> None:
    service.store.put(BUCKET, "audio/x.wav.error", b"anything")
    service.store.put(BUCKET, "audio/x.wav", b"not audio at all" * 10)
    for name in ("x.wav.error", "x.wav"):
        assert isinstance(service.diarize_object(request(f"audio/{name}"), Invocation()), Failed)
    assert service.store.keys(BUCKET, "results/") == ["results/x.wav.error.error.json", "results/x.wav.error.json"]
    assert service.store.get_json(BUCKET, "results/x.wav.error.json")["error"]["code"] == "INVALID_AUDIO"


def test_an_over_long_key_fails_its_job_with_an_error_object_in_the_fallback(service: Service) -> None:
    key = "audio/uploads/job1/" + "n" * (MAX_KEY_BYTES - len("audio/uploads/job1/"))
    service.store.put(BUCKET, key, b"any bytes")
    service.jobs.create("job1")

    outcome = service.diarize_object(request(key), Invocation(request_id="r-1"))

    assert isinstance(outcome, Failed) and outcome.error["code"] == "KEY_TOO_LONG"
    assert outcome.error["details"]["key_bytes"] == MAX_KEY_BYTES + len("results/") - len("audio/") + len(
        LONGEST_SUFFIX
    )
    assert outcome.error["location"] == f"s3://{BUCKET}/{fallback_key(key)}"
    assert service.store.keys(BUCKET, "results/") == [fallback_key(key)]
    body = service.store.get_json(BUCKET, fallback_key(key))
    assert body["input"]["uri"] == f"s3://{BUCKET}/{key}" and body["request_id"] == "r-1"
    assert body["error"]["code"] == "KEY_TOO_LONG"
    assert service.jobs.jobs["job1"]["status"] == "failed"
    assert service.jobs.jobs["job1"]["outcome"]["error"]["code"] == "KEY_TOO_LONG"
    assert [event["status"] for event in service.notifier.published] == ["failed"]
    assert service.telemetry.failures == ["KEY_TOO_LONG"]


def test_a_key_no_s3_object_can_have_is_refused_without_asking_s3(service: Service) -> None:
    """880 × "é" is 1,760 bytes: S3 would answer a HEAD with a bare 400 (unmapped, so retried): never asked."""
    key = "audio/" + "é" * 880
    outcome = service.diarize_object(ObjectRequest(ObjectRef(BUCKET, key), key_may_be_encoded=True), Invocation())
    assert isinstance(outcome, Failed) and outcome.error["code"] == "KEY_TOO_LONG"
    assert outcome.error["details"]["key_bytes"] == 6 + 1760
    assert service.store.keys(BUCKET, "results/") == [fallback_key(key)]
    assert service.store.get_json(BUCKET, fallback_key(key))["input"] == {
        "uri": f"s3://{BUCKET}/{key}",
        "version_id": None,
        "etag": None,
    }


def test_a_name_under_the_fallback_folder_cannot_overwrite_a_fallback(service: Service) -> None:
    squatter = f"audio/_key-too-long/{hashlib.sha256(KEY_1024.encode()).hexdigest()}"
    for key in (KEY_1024, squatter):
        service.store.put(BUCKET, key, b"any bytes")
        assert service.diarize_object(request(key), Invocation()).status == "failed"
    assert service.store.keys(BUCKET, "results/") == sorted([fallback_key(KEY_1024), fallback_key(squatter)])
    assert service.store.get_json(BUCKET, fallback_key(KEY_1024))["input"]["uri"] == f"s3://{BUCKET}/{KEY_1024}"
    assert service.store.get_json(BUCKET, fallback_key(squatter))["error"]["code"] == "INPUT_NAME_RESERVED"


def test_refused_names_are_ordered_like_any_run(diarizer: Diarizer, tmp_path: Path) -> None:
    service = make_service(diarizer, tmp_path, versioned=True)
    old = service.store.put(BUCKET, KEY_1024, b"first")
    new = service.store.put(BUCKET, KEY_1024, b"second")
    assert isinstance(service.diarize_object(request(KEY_1024, sequencer="02"), Invocation()), Failed)

    late = service.diarize_object(
        ObjectRequest(ObjectRef(BUCKET, KEY_1024, old.version_id), sequencer="01"), Invocation()
    )

    assert isinstance(late, Skipped) and late.reason.startswith("superseded")
    assert service.store.get_json(BUCKET, fallback_key(KEY_1024))["input"]["version_id"] == new.version_id


def test_given_up_work_on_a_refused_name_reports_the_refusal(service: Service) -> None:
    service.store.put(BUCKET, "audio/uploads/job4/x.wav.error", b"any bytes")
    service.jobs.create("job4")
    outcome = service.abandon(request("audio/uploads/job4/x.wav.error"), Invocation(), deliveries=3)
    assert isinstance(outcome, Failed) and outcome.error["code"] == "INPUT_NAME_RESERVED"
    assert service.jobs.jobs["job4"]["status"] == "failed"
    assert service.store.keys(BUCKET, "results/") == ["results/uploads/job4/x.wav.error.error.json"]

    gone = "audio/" + "é" * 880
    outcome = service.abandon(request(gone), Invocation(), deliveries=3)
    assert isinstance(outcome, Failed) and outcome.error["code"] == "KEY_TOO_LONG"
    assert outcome.error["location"] == f"s3://{BUCKET}/{fallback_key(gone)}"


def test_no_name_pattern_takes_a_trailing_newline() -> None:
    """`$` also matches before a final newline; every pattern that checks a name or a number ends in `\\Z`."""
    from diarization.aws_ports.dynamodb_jobs import JOB_ID
    from diarization.core.voiceprints import NAME_PATTERN
    from diarization.sagemaker.server import CONTENT_LENGTH
    from diarization.service.callbacks import HOST_LABELS
    from diarization.service.fanout_steps import EXECUTION_NAME

    for pattern, valid in (
        (NAME_PATTERN, "alice"),
        (JOB_ID, "0" * 32),
        (EXECUTION_NAME, "run-1"),
        (CONTENT_LENGTH, "12"),
        (HOST_LABELS, "hooks.example.com"),
    ):
        assert pattern.match(valid) and not pattern.match(valid + "\n"), pattern.pattern
