"""Voiceprints without a pipeline: matching, confidence, the stored form, local files and settings (fast)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from diarization.aws.settings import AwsSettings
from diarization.cli import voiceprint_files
from diarization.core.config import Settings
from diarization.core.result import (
    AudioFacts,
    DiarizationResult,
    ModelInfo,
    Segment,
    SpeakerIdentity,
    Timings,
    load_schema,
)
from diarization.core.voiceprints import EmbeddingModel, Voiceprint, confidence, enroll, identify
from diarization.errors import (
    ConfigurationError,
    EnrollmentNoSpeechError,
    InvalidVoiceprintError,
    VoiceprintModelMismatchError,
    VoiceprintNotFoundError,
)

MODEL = EmbeddingModel("segmentation-3.0+resemblyzer-ge2e", "r1", 3)
OTHER_MODEL = EmbeddingModel("community-1", "r1", 3)


def voiceprint(name: str, vector: list[float], model: EmbeddingModel = MODEL) -> Voiceprint:
    return enroll(name, model, {"SPEAKER_00": 5.0}, {"SPEAKER_00": vector}, created_at="2026-11-26T00:00:00+00:00")


def unit(*values: float) -> list[float]:
    vector = np.asarray(values, dtype=float)
    return list(vector / np.linalg.norm(vector))


def test_speakers_take_the_names_of_matching_voiceprints_one_to_one() -> None:
    alice, bob = voiceprint("alice", [1.0, 0.0, 0.0]), voiceprint("bob", [0.0, 1.0, 0.0])
    # SPEAKER_01 resembles alice even more than SPEAKER_00 does, but a voice is one speaker: alice goes where the
    # total similarity is highest and SPEAKER_00, the runner-up, does not become a second alice.
    speakers = {"SPEAKER_00": unit(0.9, 0.1, 0.3), "SPEAKER_01": unit(1.0, 0.02, 0.0), "SPEAKER_02": unit(0.1, 1, 0)}
    identities = identify(speakers, [alice, bob], MODEL, threshold=0.75)
    assert identities["SPEAKER_01"].name == "alice" and identities["SPEAKER_02"].name == "bob"
    anonymous = identities["SPEAKER_00"]
    assert anonymous.name is None and anonymous.confidence is None
    assert anonymous.similarity == pytest.approx(float(np.dot(speakers["SPEAKER_00"], [1, 0, 0])), abs=1e-4)


def test_below_the_threshold_a_speaker_stays_anonymous() -> None:
    alice = voiceprint("alice", [1.0, 0.0, 0.0])
    speaker = unit(0.8, 0.6, 0.0)  # cosine 0.8
    assert identify({"SPEAKER_00": speaker}, [alice], MODEL, threshold=0.79)["SPEAKER_00"].name == "alice"
    assert identify({"SPEAKER_00": speaker}, [alice], MODEL, threshold=0.81)["SPEAKER_00"] == SpeakerIdentity(
        None, 0.8, None
    )


def test_confidence_follows_the_documented_formula() -> None:
    assert confidence(0.9, None, 0.75) == pytest.approx(0.6)  # (0.9 - 0.75) / 0.25
    assert confidence(0.9, 0.85, 0.75) == pytest.approx(0.2)  # a close runner-up lowers it
    assert confidence(0.9, 0.95, 0.75) == 0.0  # assigned elsewhere would have been closer: no confidence
    assert confidence(1.0, None, 0.75) == 1.0
    alice, bob = voiceprint("alice", [1.0, 0.0, 0.0]), voiceprint("bob", unit(0.6, 0.8, 0.0))
    identity = identify({"SPEAKER_00": [1.0, 0.0, 0.0]}, [alice, bob], MODEL, 0.5)["SPEAKER_00"]
    assert identity == SpeakerIdentity("alice", 1.0, round((1.0 - 0.6) / 0.5, 3))


def test_a_speaker_without_a_centroid_is_anonymous() -> None:
    """pyannote pads the centroids with zero rows for speakers its clustering has none for."""
    identities = identify({"SPEAKER_00": [0.0, 0.0, 0.0]}, [voiceprint("alice", [1.0, 0.0, 0.0])], MODEL, 0.5)
    assert identities == {"SPEAKER_00": SpeakerIdentity(None, None, None)}


def test_voiceprints_of_another_model_are_refused() -> None:
    foreign = voiceprint("carol", [1.0, 0.0, 0.0], OTHER_MODEL)
    with pytest.raises(VoiceprintModelMismatchError) as caught:
        identify({"SPEAKER_00": [1.0, 0.0, 0.0]}, [foreign], MODEL, 0.5)
    assert caught.value.code == "VOICEPRINT_MODEL_MISMATCH" and caught.value.http_status == 409
    assert "community-1@r1" in caught.value.message and "Enroll them again" in caught.value.message
    other_revision = dataclasses.replace(foreign, model=dataclasses.replace(MODEL, revision="r2"))
    with pytest.raises(VoiceprintModelMismatchError):
        identify({"SPEAKER_00": [1.0, 0.0, 0.0]}, [other_revision], MODEL, 0.5)


def test_enrollment_takes_the_dominant_speaker_and_says_so() -> None:
    made = enroll(
        "alice",
        MODEL,
        {"SPEAKER_00": 2.0, "SPEAKER_01": 6.5, "SPEAKER_02": 9.0},
        {"SPEAKER_00": [1.0, 0, 0], "SPEAKER_01": [0, 2.0, 0], "SPEAKER_02": [0, 0, 0]},  # 02: no usable centroid
    )
    assert made.embedding == (0.0, 1.0, 0.0)  # unit length
    assert made.enrollment == {"speaker": "SPEAKER_01", "speaking_seconds": 6.5, "speakers_found": 3}
    with pytest.raises(EnrollmentNoSpeechError) as caught:
        enroll("alice", MODEL, {}, {})
    assert caught.value.code == "ENROLLMENT_NO_SPEECH" and caught.value.http_status == 400


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../x", "x" * 65, "tab\there", "alice\n", None, 7])
def test_names_that_cannot_be_file_names_or_keys_are_refused(name: object) -> None:
    with pytest.raises(InvalidVoiceprintError) as caught:
        enroll(name, MODEL, {"SPEAKER_00": 1.0}, {"SPEAKER_00": [1.0, 0, 0]})  # type: ignore[arg-type]
    assert caught.value.code == "INVALID_VOICEPRINT"


def test_the_stored_form_round_trips_and_is_checked() -> None:
    alice = voiceprint("Ada Lovelace", [0.6, 0.8, 0.0])
    body = json.loads(json.dumps(alice.to_dict()))
    assert body["format"] == "voiceprint-1" and body["model"] == {"name": MODEL.name, "revision": "r1", "dimension": 3}
    assert Voiceprint.from_dict(body) == alice
    for broken in (
        {**body, "format": "voiceprint-0"},
        {**body, "embedding": [0.6, 0.8]},
        {**body, "embedding": [0.6, "x", 0.0]},
        {**body, "embedding": [float("nan"), 0.8, 0.0]},
        {key: value for key, value in body.items() if key != "model"},
        [],
    ):
        with pytest.raises(InvalidVoiceprintError):
            Voiceprint.from_dict(broken)


def test_local_files(tmp_path: Path) -> None:
    folder = tmp_path / "voiceprints"
    path = voiceprint_files.save(folder, voiceprint("alice", [1.0, 0.0, 0.0]))
    assert path == folder / "alice.json" and os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()
    assert voiceprint_files.load(folder, ["alice"])[0].name == "alice"
    with pytest.raises(VoiceprintNotFoundError, match="--enroll bob FILE"):
        voiceprint_files.load(folder, ["bob"])
    (folder / "carol.json").write_text(path.read_text())  # alice's voiceprint under another name
    with pytest.raises(InvalidVoiceprintError, match="not 'carol'"):
        voiceprint_files.load(folder, ["carol"])
    (folder / "dave.json").write_text("{not json")
    with pytest.raises(InvalidVoiceprintError):
        voiceprint_files.load(folder, ["dave"])
    (folder / "eve.json").write_text("[" * 100_000)  # too deep for the parser: a RecursionError, no ValueError
    with pytest.raises(InvalidVoiceprintError, match="nested too deeply"):
        voiceprint_files.load(folder, ["eve"])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_threshold_setting() -> None:
    assert Settings.from_env({}).voiceprint_threshold == 0.86
    assert Settings.from_env({"VOICEPRINT_THRESHOLD": "0.8"}).voiceprint_threshold == 0.8
    for bad in ("1", "1.5", "-2", "high", "nan"):
        with pytest.raises(ConfigurationError, match="VOICEPRINT_THRESHOLD"):
            Settings.from_env({"VOICEPRINT_THRESHOLD": bad})


def test_voiceprint_storage_must_not_overlap_inputs_or_results() -> None:
    ok = AwsSettings.from_env({"INPUT_BUCKET": "in"})
    assert ok.voiceprint_location() == ("in", "voiceprints/")
    for env in (
        {"INPUT_BUCKET": "in", "INPUT_PREFIX": ""},
        {"INPUT_BUCKET": "in", "VOICEPRINT_PREFIX": "results/voices/"},
        {"INPUT_BUCKET": "in", "VOICEPRINT_PREFIX": "audio/v/"},
        {},
    ):
        with pytest.raises(ConfigurationError):
            AwsSettings.from_env(env).voiceprint_location()
    assert AwsSettings.from_env(
        {"INPUT_BUCKET": "in", "OUTPUT_BUCKET": "out", "INPUT_PREFIX": ""}
    ).voiceprint_location()
    with pytest.raises(ConfigurationError, match="VOICEPRINT_PREFIX"):
        AwsSettings.from_env({"VOICEPRINT_PREFIX": "voices"})
    drops = AwsSettings.from_env({"DROP_VOICEPRINT_OWNER": "anonymous", "DROP_VOICEPRINTS": "alice, bob"})
    assert (drops.drop_voiceprint_owner, drops.drop_voiceprints) == ("anonymous", ("alice", "bob"))
    for env in ({"DROP_VOICEPRINTS": "alice"}, {"DROP_VOICEPRINT_OWNER": "anonymous"}):
        with pytest.raises(ConfigurationError, match="go together"):
            AwsSettings.from_env(env)


def test_identities_in_the_result_and_its_schema() -> None:
    result = DiarizationResult(
        input_uri="meeting.wav",
        audio=AudioFacts(
            duration_seconds=10.0, sample_rate=16000, channels=1, codec="pcm_s16le", container="wav", size_bytes=320044
        ),
        parameters={"num_speakers": None, "min_speakers": None, "max_speakers": None},
        segments=[Segment(0.0, 4.0, "SPEAKER_00"), Segment(4.0, 9.0, "SPEAKER_01")],
        exclusive_segments=[Segment(0.0, 4.0, "SPEAKER_00"), Segment(4.0, 9.0, "SPEAKER_01")],
        model=ModelInfo("m", "r", True, "4.0.7", "2.14.1", None, "cpu", "cpu", 2),
        timings=Timings(0.1, 1.0, 1.1, 0.11),
        speaker_embeddings={"SPEAKER_00": (1.0, 0.0), "SPEAKER_01": (0.0, 1.0)},
    )
    plain = result.to_dict()
    assert plain["speakers"][0]["name"] is None and "speaker_embeddings" not in plain and "identification" not in plain
    named = dataclasses.replace(
        result,
        identities={"SPEAKER_00": SpeakerIdentity("alice", 0.91, 0.64)},
        identification={"threshold": 0.75, "voiceprints": ["alice"]},
        include_embeddings=True,
    ).to_dict()
    jsonschema.validate(named, load_schema())
    jsonschema.validate(plain, load_schema())
    assert named["speakers"][0] | {} == {
        "id": "SPEAKER_00",
        "speaking_seconds": 4.0,
        "segment_count": 1,
        "name": "alice",
        "similarity": 0.91,
        "confidence": 0.64,
    }
    assert named["speakers"][1]["name"] is None
    assert named["speaker_embeddings"] == {"SPEAKER_00": [1.0, 0.0], "SPEAKER_01": [0.0, 1.0]}
