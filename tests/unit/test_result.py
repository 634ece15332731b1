"""The result object: derived totals, overlap, RTTM, and the committed schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from diarization.core.result import (
    SCHEMA_VERSION,
    AudioFacts,
    DiarizationResult,
    ModelInfo,
    Segment,
    Timings,
    load_schema,
    rttm_file_id,
)


def make_result(segments: list[Segment], uri: str = "s3://bucket/audio/Team call 1.m4a") -> DiarizationResult:
    return DiarizationResult(
        input_uri=uri,
        audio=AudioFacts(10.0, 44_100, 2, "aac", "mov,mp4,m4a,3gp,3g2,mj2", 1234),
        parameters={"num_speakers": None, "min_speakers": None, "max_speakers": None},
        segments=segments,
        exclusive_segments=[],
        model=ModelInfo("m", None, True, "4.0.7", "2.14.1", None, "cpu", "cpu", 2),
        timings=Timings(0.1, 1.0, 1.1, 0.11),
    )


def test_overlap_and_speaker_totals() -> None:
    result = make_result(
        [
            Segment(0.0, 4.0, "SPEAKER_00"),
            Segment(3.0, 6.0, "SPEAKER_01"),
            Segment(5.5, 7.0, "SPEAKER_00"),
            Segment(5.8, 6.2, "SPEAKER_02"),
        ]
    )
    # overlaps: 3-4 (two), 5.5-6.0 (two, three from 5.8), 6.0-6.2 (00 and 02) -> 1 + 0.5 + 0.2
    assert result.overlap_seconds == pytest.approx(1.7)
    speakers = {s.id: (s.speaking_seconds, s.segment_count) for s in result.speakers}
    assert speakers == {"SPEAKER_00": (5.5, 2), "SPEAKER_01": (3.0, 1), "SPEAKER_02": (pytest.approx(0.4), 1)}


def test_json_is_schema_valid_and_round_trips() -> None:
    result = make_result([Segment(0.5, 1.25, "SPEAKER_00")])
    data = json.loads(result.to_json())
    jsonschema.validate(data, load_schema())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["input"] == {"uri": "s3://bucket/audio/Team call 1.m4a", "size_bytes": 1234}
    assert data["audio"]["original"]["codec"] == "aac"


def test_schema_rejects_unknown_and_missing_fields() -> None:
    data = make_result([]).to_dict()
    schema = load_schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "surprise": 1}, schema)
    del data["timings"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_rttm_uses_a_whitespace_free_file_id() -> None:
    rttm = make_result([Segment(0.5, 1.25, "SPEAKER_00")]).to_rttm()
    assert rttm == "SPEAKER Team_call_1 1 0.500 0.750 <NA> <NA> SPEAKER_00 <NA> <NA>\n"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("/a/b/meeting.wav", "meeting"), ("s3://b/k/x y.tar.gz", "x_y.tar"), ("noext", "noext"), ("upload", "upload")],
)
def test_rttm_file_id(uri: str, expected: str) -> None:
    assert rttm_file_id(uri) == expected
